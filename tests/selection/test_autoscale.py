"""The rules against a real study: ``rs-search propose`` / ``scale``, enqueuing, the worker hook
(``rs_search.search.proposals`` driving the pure ``rs_search.selection``).

Studies are built with Optuna directly (SQLite and PostgreSQL) with the settings ``rs-search
start`` stores; trials are created or run through ``study.ask``/``tell`` with the space's real
sampler, as the worker does (no training: the curves are constructed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from rs_search.search.proposals import (
    AutoScale,
    enqueue_proposals,
    maybe_auto_scale,
    propose_for_study,
)
from rs_search.search.settings import settings_from_space
from rs_search.space import SearchSpace, load_space
from rs_search.specs import Candidate
from rs_search.study import attrs
from rs_search.study.attrs import ORIGIN, PROPOSAL, REASON, SOURCE_TRIAL
from rs_search.study.queue import enqueue_work
from rs_search.study.record import TrialRecord, trial_record
from rs_search.study.settings import StudySettings
from tests.cli_runner import run_in_process

SPACES = Path(__file__).resolve().parents[2] / "spaces"
RULES_SPACE = Path(__file__).parent / "data" / "rules.yaml"  # the first quickstart, frozen
STUDY = "rules"
BUDGET = 12


def curve(top1: float, *, gap: float) -> list[dict[str, Any]]:
    """A 12-epoch curve whose train accuracy measured like validation is ``gap`` points above
    val top-1 (with a val loss 30% above train's when the gap is 5 points or more)."""
    ratio = 1.3 if gap >= 5 else 1.01
    return [
        {
            "epoch": e,
            "train_loss": 2.0 - 0.1 * e,
            "train_top1": top1 - 5.0,
            "train_eval_top1": top1 + gap,
            "train_eval_loss": (2.1 - 0.1 * e) / ratio,
            "val_loss": 2.1 - 0.1 * e,
            "val_top1": top1,
            "val_loss_raw": 2.1 - 0.1 * e,
            "val_top1_raw": top1,
            "images_per_s": 50.0,
            "epoch_seconds": 1.0,
            "peak_memory_mb": 100.0,
            "lr": 0.1,
        }
        for e in range(1, BUDGET + 1)
    ]


def make_study(
    storage: str, *, n_trials: int | None = None, constraints: dict[str, float] | None = None
) -> tuple[optuna.Study, StudySettings, SearchSpace]:
    space = load_space(RULES_SPACE)
    if constraints:
        data = space.to_dict()
        data["constraints"] = constraints
        space = SearchSpace.from_dict(data)
    settings = settings_from_space(
        space,
        budget_epochs=BUDGET,
        data="digits",
        eta=None,
        min_rung=None,
        n_trials=n_trials,
        sampler="random",
        seed=0,
        heartbeat_interval=30,
        grace_period=120,
        artifacts="unused",
    )
    study = optuna.create_study(
        study_name=STUDY, storage=storage, directions=list(settings.directions)
    )  # type: ignore[arg-type]
    for key, value in settings.user_attrs().items():
        study.set_user_attr(key, value)
    return study, settings, space


def run_trial(
    study: optuna.Study, space: SearchSpace, *, top1: float, latency: float, gap: float
) -> optuna.trial.FrozenTrial:
    """What a worker does, minus training: claim the next waiting trial (or a new one), let the
    space's sampler build the candidate from its params, record it, tell the values."""
    trial = study.ask()
    candidate = space.sample(trial, epochs=BUDGET)
    trial.set_user_attr(attrs.CANDIDATE, candidate.to_dict())
    trial.set_user_attr(attrs.ARCH_KEY, candidate.arch.key())
    trial.set_user_attr(attrs.CURVE, curve(top1, gap=gap))
    study.tell(trial, [top1, latency])
    return study.get_trials(deepcopy=False)[trial.number]


def record(trial: optuna.trial.FrozenTrial) -> TrialRecord:
    """What the worker's hook receives after a trial (``study.queue.after_each_trial``)."""
    return trial_record(trial, ("accuracy", "latency"))


def add_trial(
    study: optuna.Study,
    space: SearchSpace,
    candidate: Candidate,
    *,
    top1: float,
    latency: float,
    gap: float,
) -> None:
    study.add_trial(
        create_trial(
            values=[top1, latency],
            params=space.seed_params(candidate),
            distributions={
                k: v for k, v in space.distributions().items() if k in space.seed_params(candidate)
            },
            user_attrs={attrs.CANDIDATE: candidate.to_dict(), attrs.CURVE: curve(top1, gap=gap)},
        )
    )


def seed_candidate(space: SearchSpace, index: int) -> Candidate:
    return space.seeds[index].candidate(epochs=BUDGET)


@pytest.fixture(params=["sqlite", "postgres"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'study.db'}"
    return str(request.getfixturevalue("postgres_url"))


def test_propose_prints_reasons_and_enqueue_runs_as_the_sampler_would(
    storage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    study, settings, space = make_study(storage)
    small = seed_candidate(space, 0)  # [1,1,1,1] w0.25 r32
    add_trial(study, space, small, top1=90.0, latency=1.0, gap=8.0)  # overfits -> depth
    code, out, err = run_in_process(["propose", "--study", STUDY, "--storage", storage], capsys)
    assert code == 0, err
    assert (
        "depth 1-1-1-1→1-2-2-1: overfitting at the end of the schedule (train/val top-1 gap "
        "8.0 points"
    ) in out
    assert "paper (abstract; Sec. 7.2, Fig. 6)" in out and "project heuristics:" in out
    assert "resolution 32→48" in out
    assert study.get_trials(states=(TrialState.WAITING,)) == []  # printing enqueues nothing

    code, out, err = run_in_process(
        ["propose", "--study", STUDY, "--storage", storage, "--enqueue"], capsys
    )
    assert code == 0, err
    assert "enqueued rule:depth as trial 1: appended" in out
    (waiting,) = study.get_trials(states=(TrialState.WAITING,))
    assert waiting.user_attrs[ORIGIN] == "rule:depth"
    assert waiting.user_attrs[REASON].startswith("depth 1-1-1-1→1-2-2-1")
    assert waiting.user_attrs[SOURCE_TRIAL] == 0
    proposed = Candidate.from_dict(waiting.user_attrs[PROPOSAL])
    # the worker's sampling of the enqueued params gives exactly the proposed candidate
    ran = run_trial(study, space, top1=93.0, latency=2.0, gap=1.0)
    assert ran.number == waiting.number
    assert Candidate.from_dict(ran.user_attrs[attrs.CANDIDATE]) == proposed
    assert ran.user_attrs[ORIGIN] == "rule:depth"
    # proposing again does not repeat a candidate the study has
    code, out, _ = run_in_process(
        ["propose", "--study", STUDY, "--storage", storage, "--n", "3"], capsys
    )
    assert code == 0
    assert "trial 0: depth 1-1-1-1→1-2-2-1 is already trial 1" in out
    assert "width 0.25→0.375: no overfitting" in out  # trial 1 (gap 1.0, 12-epoch budget)


def test_proposal_over_the_latency_limit_is_dropped_with_its_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study, settings, space = make_study(storage, constraints={"max_latency_ms": 1.5})
    add_trial(study, space, seed_candidate(space, 0), top1=90.0, latency=1.0, gap=8.0)
    result = propose_for_study(study, settings, n=1, storage=storage)
    assert result.proposals == ()
    (gone,) = result.dropped
    # [1,2,2,1] at 48 px has several times the FLOPs of [1,1,1,1] at 32 px: predicted > 1.5 ms
    assert gone.reason.startswith("latency ")
    assert "> max_latency_ms 1.5 (predicted: trial 0's 1 ms x FLOPs ratio" in gone.reason
    code, out, err = run_in_process(["propose", "--study", STUDY, "--storage", storage], capsys)
    assert code == 0, err
    assert "no proposal" in out and "> max_latency_ms 1.5" in out


def test_auto_scale_alternates_with_the_sampler_inside_the_trial_budget(storage: str) -> None:
    study, settings, space = make_study(storage, n_trials=6)
    seeds, slots = enqueue_work(study, settings, space)
    assert (seeds, slots) == (3, 3)
    echoed: list[str] = []
    hook = AutoScale(settings=settings, echo=echoed.append)  # the study's engine for the cache
    # seeds 0..2 run first (the queue is FIFO); each sampler/seed trial may trigger a proposal
    first = run_trial(study, space, top1=80.0, latency=1.0, gap=9.0)
    hook(study, record(first))
    rules = [t for t in study.get_trials() if t.user_attrs.get(ORIGIN)]
    assert len(rules) == 1 and rules[0].state == TrialState.WAITING
    assert rules[0].number == 3  # took over the first empty budget slot, not a new trial
    assert attrs.SLOT in rules[0].user_attrs
    assert len(study.get_trials()) == 6  # the budget stays six trials
    assert echoed and "auto-scale after trial 0: rule:depth -> trial 3 (slot)" in echoed[0]

    second = run_trial(study, space, top1=85.0, latency=1.5, gap=9.0)
    # a rule trial is already waiting: nothing more
    assert maybe_auto_scale(study, record(second), settings=settings) == []
    run_trial(study, space, top1=88.0, latency=2.5, gap=9.0)  # seed 2
    ruled = run_trial(study, space, top1=91.0, latency=2.0, gap=1.0)  # the rule trial (slot 3)
    assert ruled.number == 3 and ruled.user_attrs[ORIGIN] == "rule:depth"
    # rule trials do not feed themselves
    assert maybe_auto_scale(study, record(ruled), settings=settings) == []
    after = run_trial(study, space, top1=70.0, latency=0.5, gap=0.0)  # sampler, slot 4
    made = maybe_auto_scale(study, record(after), settings=settings)
    assert [e.trial_number for e in made] == [5] and made[0].how == "slot"
    last = study.get_trials()[5]
    assert last.state == TrialState.WAITING and last.user_attrs[ORIGIN].startswith("rule:")
    ran_keys = {
        Candidate.from_dict(t.user_attrs[attrs.CANDIDATE]).key()
        for t in study.get_trials(states=(TrialState.COMPLETE,))
    }
    assert Candidate.from_dict(last.user_attrs[PROPOSAL]).key() not in ran_keys
    final = run_trial(study, space, top1=92.0, latency=2.2, gap=1.0)
    assert final.number == 5 and final.user_attrs[REASON] == last.user_attrs[REASON]
    # budget spent: no slot left, nothing more is enqueued
    assert maybe_auto_scale(study, record(after), settings=settings) == []
    assert len(study.get_trials()) == 6


def test_out_of_space_proposals_are_enqueued_as_whole_candidates(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study, settings, space = make_study(storage)
    top = seed_candidate(space, 2)  # [2,2,2,2] w0.5 r48: the deepest layout of the space
    add_trial(study, space, top, top1=95.0, latency=3.0, gap=9.0)
    runnable = propose_for_study(study, settings, n=1, storage=storage)
    (p,) = runnable.proposals  # the worker runs fixed candidates: nothing is refused
    assert p.candidate.arch.label == "50"  # the family's next depth, outside the space
    assert space.violations(p.candidate)
    (done,) = enqueue_proposals(study, settings, [p])
    assert done.trial_number is not None and done.how == "appended"
    queued = study.get_trials()[done.trial_number]
    assert queued.state == TrialState.WAITING and queued.params == {}
    assert queued.user_attrs[attrs.FIXED_CANDIDATE] == p.candidate.to_dict()
    assert queued.user_attrs[ORIGIN] == "rule:depth" and queued.user_attrs[SOURCE_TRIAL] == 0


def test_scale_prints_a_family_with_latency(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study, settings, space = make_study(storage)
    add_trial(study, space, seed_candidate(space, 0), top1=90.0, latency=1.0, gap=2.0)
    code, out, err = run_in_process(
        ["scale", "--study", STUDY, "--storage", storage, "--trial", "0", "--steps", "3"], capsys
    )
    assert code == 0, err
    for step in ("depth 1-1-1-1→2-2-2-2", "depth 2-2-2-2→50", "depth 50→101"):
        assert step in out
    assert "predicted: trial 0's 1 ms x FLOPs ratio" in out
    code, _, err = run_in_process(
        ["scale", "--study", STUDY, "--storage", storage, "--trial", "9"], capsys
    )
    assert code == 2 and "has no trial 9" in err
