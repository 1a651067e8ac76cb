"""The closing summary of ``rs-search start``: what each scaling rule proposed, why, and how the
proposal did against the trial it came from (issue 12, item 6). Records are built from real
Optuna trials (``optuna.trial.create_trial``) read by the study layer, as ``start`` reads them."""

from __future__ import annotations

from typing import Any

import optuna

from rs_search.search.summary import rule_outcomes
from rs_search.selection.scaling import PAPER_RULE, RuleSettings, TrialView, propose
from rs_search.specs import ArchSpec, Candidate, RecipeSpec
from rs_search.study import attrs
from rs_search.study.record import TrialRecord, trial_record
from rs_search.study.settings import StudySettings

OBJECTIVES = ("accuracy", "latency")
SETTINGS = StudySettings(space={}, space_fingerprint="x", budget_epochs=12)
SMALL = Candidate(
    arch=ArchSpec(layout=(1, 1, 1, 1), width=0.125, resolution=16, num_classes=10),
    recipe=RecipeSpec(epochs=12),
)


def _curve(gap: float) -> list[dict[str, Any]]:
    return [
        {
            "epoch": e,
            "val_top1": 90.0,
            "val_loss": 0.5,
            "train_eval_top1": 90.0 + gap,
            "train_eval_loss": 0.5 / (1.3 if gap >= 5 else 1.0),
            "train_loss": 0.7,
        }
        for e in range(1, 13)
    ]


def _record(
    number: int,
    candidate: Candidate,
    *,
    values: list[float] | None,
    state: optuna.trial.TrialState = optuna.trial.TrialState.COMPLETE,
    extra: dict[str, Any] | None = None,
    epochs: int = 12,
) -> TrialRecord:
    user = {
        attrs.CANDIDATE: candidate.to_dict(),
        attrs.CURVE: _curve(0.5)[:epochs],
        **(extra or {}),
    }
    trial = optuna.trial.create_trial(values=values, state=state, user_attrs=user)
    return trial_record(_numbered(trial, number), OBJECTIVES)


def _numbered(trial: optuna.trial.FrozenTrial, number: int) -> optuna.trial.FrozenTrial:
    trial.number = number
    return trial


def _proposal(source: TrialRecord) -> tuple[Candidate, dict[str, Any]]:
    view = TrialView.from_record(source, budget=12, objectives=OBJECTIVES, train_images=1437)
    assert view is not None
    (p,) = propose([view], settings=RuleSettings()).proposals
    return p.candidate, {
        attrs.ORIGIN: p.origin,
        attrs.REASON: p.reason,
        attrs.SOURCE_TRIAL: source.number,
        attrs.PROPOSAL: p.candidate.to_dict(),
    }


def test_each_rule_trial_shows_its_step_why_and_result_against_its_source() -> None:
    source = _record(0, SMALL, values=[96.11, 2.58])
    wider, tags = _proposal(source)
    ran = _record(1, wider, values=[97.5, 3.1], extra=tags)
    pruned = _record(
        2,
        wider,
        values=None,
        state=optuna.trial.TrialState.PRUNED,
        extra={**tags, attrs.REASON: "width 0.25→0.375: [markup] no overfitting"},
        epochs=4,
    )
    (first, second) = rule_outcomes([source, ran, pruned], SETTINGS)
    assert first.number == 1 and first.origin == "rule:width" and first.source == 0
    assert first.step == "width 0.125→0.25"
    assert first.result == "top-1 97.50% (+1.39 vs trial 0's 96.11%), latency 3.1 ms (+0.52 ms)"
    assert first.on_front  # more accurate than its source
    assert first.why.startswith("no overfitting (train/val top-1 gap 0.5 points")
    assert "middle regime: 12 epochs on 1437 training images" in first.why
    assert "[" not in first.why and "paper" not in first.why  # citations apart, once
    assert any(PAPER_RULE in c for c in first.citations)
    assert any(c.startswith("paper Sec. 7.3") for c in first.citations)
    assert second.result == "pruned after 4 epochs" and not second.on_front
    # a reason read from the study is data: a bracket in it is cut out as a citation, never
    # interpreted (the CLI prints with markup off)
    assert second.citations == ("markup",) and second.why == "no overfitting"


def test_no_rule_trials_no_outcomes() -> None:
    assert rule_outcomes([_record(0, SMALL, values=[96.0, 2.0])], SETTINGS) == []
