"""A retried trial whose checkpoints are damaged: truncated (a copy cut short, a full disk) or
overwritten with garbage. The retry falls back to the previous checkpoint, or to a fresh start
when none loads, says so in the worker's output, and still trains the trial to its full budget.

Two workers of one ``start`` train two trials; both are SIGKILLed once each trial has two
checkpoints (the engine keeps the newest two). Trial 0's newest checkpoint is then truncated,
and both of trial 1's are overwritten; a new worker runs both retries.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

from tests.reliability.conftest import kill_study_processes, study_processes, unique
from tests.search.conftest import MICRO_STEPS, cli, cli_env, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

BUDGET = 6
# The checkpoint file names the engine writes: completed epochs, then steps into the next one.
CHECKPOINT = re.compile(r"^ckpt-(\d{4,})-(\d{6,})\.pt$")


def _checkpoints(folder: Path) -> list[Path]:
    """Checkpoints in ``folder``, newest first."""
    if not folder.is_dir():
        return []
    found = [(m.groups(), p) for p in folder.iterdir() if (m := CHECKPOINT.match(p.name))]
    return [p for _, p in sorted(found, key=lambda item: tuple(map(int, item[0])), reverse=True)]


def _epoch(path: Path) -> int:
    match = CHECKPOINT.match(path.name)
    assert match is not None
    return int(match.group(1))


def test_damaged_checkpoints_fall_back_to_the_previous_one_or_a_fresh_start(
    postgres_url: str, tmp_path: Path
) -> None:
    """Seen failing with ``load_latest`` (``rs_search/train/checkpoint.py``) broken to give up at
    the first unreadable file (``return None`` instead of ``continue``): trial 0's retry started
    from epoch 0 and the test reported ``assert None == 1`` on its ``resumed_from_epoch``."""
    study = unique("ckpt")
    art = tmp_path / "art" / study
    start = subprocess.Popen(
        cli(
            "start",
            "--no-auto-scale",  # the rules are not what this tests
            "--space",
            str(MICRO_STEPS),
            "--budget",
            f"{BUDGET}epochs",
            "--trials",
            "2",
            "--study",
            study,
            "--workers",
            "2",
            "--device",
            "cpu",
            "--sampler",
            "random",
            "--no-halving",
            "--seed",
            "0",
            "--heartbeat",
            "1",
            "--grace",
            "3",
            "--loader-workers",
            "0",
            "--artifacts",
            "art",
            "--data",
            "synthetic:10",
        ),  # fmt: skip
        env=cli_env(postgres_url),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    folders = [art / "trial-0", art / "trial-1"]
    try:
        wait_for(
            lambda: all(len(_checkpoints(f)) >= 2 for f in folders),
            timeout=600,
            what="two checkpoints of each trial",
        )
        killed = [p for p in study_processes(study) if p != start.pid]
        assert len(killed) == 2, killed
        kill_study_processes(study)  # the workers and start: SIGKILL, no goodbye
        start.communicate(timeout=60)
    finally:
        kill_study_processes(study)
    study_now = optuna.load_study(study_name=study, storage=postgres_url)
    assert not any(t.state == TrialState.COMPLETE for t in study_now.get_trials()), (
        "a trial finished before the kill: this machine trains faster than the test assumes"
    )
    # The damage: trial 0's newest cut in half, trial 1's both overwritten.
    newest, previous = _checkpoints(folders[0])[:2]
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    garbage = _checkpoints(folders[1])
    for path in garbage:
        path.write_bytes(b"not a checkpoint\n" * 64)

    done = subprocess.run(
        cli("worker", "--study", study, "--device", "cpu", "--loader-workers", "0"),
        env=cli_env(postgres_url),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "Traceback" not in out, out
    trials = optuna.load_study(study_name=study, storage=postgres_url).get_trials()
    retry = {t.system_attrs["failed_trial"]: t for t in trials if "failed_trial" in t.system_attrs}
    assert sorted(retry) == [0, 1], [(t.number, t.state, t.system_attrs) for t in trials]
    for origin, trial in retry.items():
        assert trial.state == TrialState.COMPLETE, trial.user_attrs.get("fail_reason")
        assert [row["epoch"] for row in trial.user_attrs["curve"]] == list(range(1, BUDGET + 1))
        final = _checkpoints(folders[origin])[0]
        assert _epoch(final) == BUDGET
        assert torch.load(final, weights_only=True)["epoch"] == BUDGET

    # Trial 0: resumed from the previous checkpoint, and the output names the one it skipped.
    assert retry[0].user_attrs.get("resumed_from_epoch") == _epoch(previous)
    assert re.search(rf"{re.escape(newest.name)}.*(unreadable|corrupt)", out), out
    # Trial 1: nothing loads, a fresh start, and the output says so.
    assert "resumed_from_epoch" not in retry[1].user_attrs
    for path in garbage:
        assert path.name in out, out
    assert re.search(
        rf"no loadable checkpoint in .*{re.escape(str(folders[1]))}", out
    ) or re.search(r"start(ing)? (from epoch 0|fresh|afresh)", out), out
