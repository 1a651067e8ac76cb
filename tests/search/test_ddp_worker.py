"""``rs-search worker --nproc 2``: one trial trained by a 2-process gloo group, one result."""

from __future__ import annotations

import pytest
from optuna.trial import TrialState

from tests.search.conftest import cli_env, load, make_study, run_cli

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def test_nproc_2_trains_one_trial_as_a_group(postgres_url, tmp_path):
    make_study(postgres_url, tmp_path, "ddp", trials=1, budget=1, heartbeat=5, grace=30)
    proc = run_cli(
        "worker",
        "--study",
        "ddp",
        "--device",
        "cpu",
        "--nproc",
        "2",
        "--loader-workers",
        "0",
        env=cli_env(postgres_url),
        cwd=tmp_path,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "[rank 0/2]" in proc.stdout
    trials = load("ddp", postgres_url).get_trials()
    assert len(trials) == 1  # the other rank created no trial of its own
    trial = trials[0]
    assert trial.state == TrialState.COMPLETE
    assert trial.user_attrs["world_size"] == 2
    assert len(trial.user_attrs["curve"]) == 1
    assert 0 <= trial.values[0] <= 100 and trial.values[1] > 0
