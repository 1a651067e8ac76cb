"""``TrialRecord``: one typed reading of a stored trial (values by objective name, feasibility
decided once, where a trial came from), from trials made with real Optuna."""

from __future__ import annotations

import math

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from rs_search.specs import ArchSpec, Candidate, RecipeSpec
from rs_search.study import attrs
from rs_search.study.record import count_states, trial_record

ARCH = ArchSpec(layout=(1, 1, 1, 1), width=0.25, resolution=32, num_classes=10)
CANDIDATE = Candidate(arch=ARCH, recipe=RecipeSpec(epochs=4))


def test_values_are_keyed_by_objective_name() -> None:
    trial = create_trial(
        values=[61.0, 220.0],
        user_attrs={attrs.CANDIDATE: CANDIDATE.to_dict(), attrs.LATENCY_MS: 3.5},
    )
    record = trial_record(trial, ("accuracy", "memory"))
    assert record.values == {"accuracy": 61.0, "memory": 220.0}
    assert record.top1 == 61.0 and record.memory_mb == 220.0
    assert record.latency_ms == 3.5  # what the worker measured, not the second value
    assert record.point(("memory", "accuracy")) == (220.0, 61.0)
    with pytest.raises(KeyError):
        record.point(("latency",))


@pytest.mark.parametrize(
    ("state", "values", "constraints", "extra", "usable"),
    [
        (TrialState.COMPLETE, [50.0, 1.0], None, {}, True),
        (TrialState.COMPLETE, [50.0, 1.0], {"max_latency_ms": -0.2}, {}, True),
        (TrialState.COMPLETE, [50.0, 1.0], {"max_latency_ms": 0.4}, {}, False),
        (TrialState.COMPLETE, [50.0, 1.0], {"max_latency_ms": math.inf}, {}, False),
        (TrialState.COMPLETE, [0.0, 1.0], None, {attrs.REJECTED: "latency 9 ms > 5 ms"}, False),
        (TrialState.COMPLETE, [math.inf, 1.0], None, {}, False),
        (TrialState.PRUNED, None, None, {}, False),
    ],
)
def test_trained_and_feasible_is_decided_in_one_place(
    state: TrialState,
    values: list[float] | None,
    constraints: dict[str, float] | None,
    extra: dict[str, object],
    usable: bool,
) -> None:
    trial = create_trial(
        state=state,
        values=values,
        constraints=constraints,
        user_attrs={attrs.CANDIDATE: CANDIDATE.to_dict(), **extra},
    )
    assert trial_record(trial, ("accuracy", "latency")).usable is usable


def test_origin_retry_and_budget_accounting() -> None:
    objectives = ("accuracy", "latency")
    seed = trial_record(
        create_trial(state=TrialState.WAITING, user_attrs={attrs.SEED_NAME: "small"}), objectives
    )
    rule = trial_record(
        create_trial(
            state=TrialState.WAITING,
            user_attrs={attrs.ORIGIN: "rule:depth", attrs.PROPOSAL: CANDIDATE.to_dict()},
        ),
        objectives,
    )
    slot = trial_record(
        create_trial(state=TrialState.WAITING, user_attrs={attrs.SLOT: 3}), objectives
    )
    assert (seed.origin, seed.seed_name) == ("seed", "small")
    assert rule.is_rule_proposal and rule.arch == ARCH and rule.proposal == CANDIDATE
    assert slot.origin == "sampler" and slot.is_empty_slot and not seed.is_empty_slot
    retry = create_trial(
        state=TrialState.FAIL,
        user_attrs={attrs.FAIL_REASON: "CandidateOutOfMemory: too big"},
        system_attrs={attrs.FAILED_TRIAL: 2, attrs.RETRY_HISTORY: [2, 5]},
    )
    retry.number = 7
    failed = trial_record(retry, objectives)
    assert (failed.retry_origin, failed.retry_of, failed.finished) == (2, 5, True)
    stale = trial_record(create_trial(state=TrialState.FAIL), objectives)
    assert not stale.finished  # a retry stands in for it
    counts = count_states([seed, rule, slot, failed, stale])
    assert counts["waiting"] == 3 and counts["fail"] == 2 and counts["finished"] == 1


def test_malformed_attributes_are_named_not_raised() -> None:
    trial = create_trial(
        values=[1.0, 1.0],
        user_attrs={
            attrs.ARCH: {"layout": [1, 1, 1, 1], "width": -1.0},
            attrs.FIXED_CANDIDATE: {"arch": {"width": "wide"}},
            attrs.CURVE: "not a list",
            attrs.rung_attr(4): 33.0,
            attrs.rung_attr(9): "n/a",
        },
    )
    record = trial_record(trial, ("accuracy", "latency"))
    assert record.arch is None and "arch.width" in record.problems[attrs.ARCH]
    assert record.fixed_candidate is None
    assert "arch.width" in record.problems[attrs.FIXED_CANDIDATE]
    assert record.curve == () and record.rungs == {4: 33.0}
    assert record.usable  # its values are fine: it still belongs on the front


def test_a_stored_trial_reads_back_through_a_real_study(tmp_path: object) -> None:
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.enqueue_trial({}, user_attrs={attrs.SEED_NAME: "s"})
    trial = study.ask()
    trial.set_user_attr(attrs.CANDIDATE, CANDIDATE.to_dict())
    trial.set_user_attr(attrs.CURVE, [{"epoch": 1, "val_top1": 40.0}])
    study.tell(trial, [40.0, 2.0])
    (record,) = [trial_record(t, ("accuracy", "latency")) for t in study.get_trials()]
    assert record.state == "COMPLETE" and record.seed_name == "s" and record.usable
    assert record.candidate == CANDIDATE and record.epochs_trained == 1
    assert record.label == "1-1-1-1 w0.25 r32"
