"""A scaling rule's proposal outside the study's space is queued whole and a real worker trains it
as given (issue 6: "proposals fed back into the study")."""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.trial import TrialState

from rs_search.search.proposals import enqueue_proposals
from rs_search.selection.scaling import Proposal
from rs_search.specs import ArchSpec, Candidate, RecipeSpec
from rs_search.study import attrs
from rs_search.study.attrs import ORIGIN
from rs_search.study.settings import StudySettings
from tests.search.conftest import cli_env, make_study, run_cli


def test_an_out_of_space_proposal_is_trained_as_given(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    make_study(storage, tmp_path, "fixed", trials=1, budget=1)
    study = optuna.load_study(study_name="fixed", storage=storage)
    settings = StudySettings.from_study_attrs(study.user_attrs, study_name="fixed")
    space = settings.search_space()
    # micro.yaml allows only [1,1,1,1] at 16 px: [1,2,1,1] at 24 px lies outside it
    wanted = Candidate(
        arch=ArchSpec(layout=(1, 2, 1, 1), width=0.25, resolution=24, num_classes=10),
        recipe=RecipeSpec(batch_size=128, epochs=1, warmup_epochs=0),
    )
    assert space.violations(wanted)
    (done,) = enqueue_proposals(
        study,
        settings,
        [
            Proposal(
                candidate=wanted,
                rule="depth",
                reason="test: one block more in stage 2",
                source_trial=0,
            )
        ],
    )
    assert done.trial_number is not None, done.how
    queued = study.get_trials()[done.trial_number]
    assert queued.state == TrialState.WAITING and queued.params == {}
    assert queued.user_attrs[attrs.FIXED_CANDIDATE] == wanted.to_dict()

    proc = run_cli(
        "worker",
        "--study",
        "fixed",
        "--storage",
        storage,
        "--device",
        "cpu",
        "--loader-workers",
        "0",
        env=cli_env(),
        cwd=tmp_path,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    # the worker shows the trial's epochs (plain lines: stderr is not a terminal)
    assert "epoch 1/1  train loss" in proc.stderr and "\x1b" not in proc.stderr
    trial = optuna.load_study(study_name="fixed", storage=storage).get_trials()[done.trial_number]
    assert trial.state == TrialState.COMPLETE, trial.user_attrs.get(attrs.FAIL_REASON)
    assert trial.user_attrs[ORIGIN] == "rule:depth"
    ran = Candidate.from_dict(trial.user_attrs[attrs.CANDIDATE])
    assert ran.arch == wanted.arch and ran.recipe.epochs == settings.budget_epochs
    assert trial.user_attrs[attrs.ARCH_KEY] == wanted.arch.key()
    assert len(trial.user_attrs[attrs.CURVE]) == 1 and trial.values[1] > 0


def test_an_invalid_whole_candidate_fails_its_trial_not_the_worker(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    make_study(storage, tmp_path, "bad", trials=2, budget=1)
    study = optuna.load_study(study_name="bad", storage=storage)
    # a 5-epoch warm-up cannot fit the study's 1-epoch budget
    bad = Candidate(
        arch=ArchSpec(layout=(1, 1, 1, 1), width=0.25, resolution=16, num_classes=10),
        recipe=RecipeSpec(batch_size=128, epochs=9),
    )
    settings = StudySettings.from_study_attrs(study.user_attrs, study_name="bad")
    (done,) = enqueue_proposals(
        study, settings, [Proposal(candidate=bad, rule="width", reason="test", source_trial=0)]
    )
    assert done.how == "slot"  # it takes over one of the two budget slots
    proc = run_cli(
        "worker",
        "--study",
        "bad",
        "--storage",
        storage,
        "--device",
        "cpu",
        "--loader-workers",
        "0",
        env=cli_env(),
        cwd=tmp_path,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    trials = optuna.load_study(study_name="bad", storage=storage).get_trials()
    failed = [t for t in trials if attrs.FIXED_CANDIDATE in t.user_attrs]
    assert len(failed) == 1 and failed[0].state == TrialState.FAIL
    assert "warmup_epochs" in failed[0].user_attrs[attrs.FAIL_REASON]
    assert sum(t.state == TrialState.COMPLETE for t in trials) >= 1  # the worker went on
