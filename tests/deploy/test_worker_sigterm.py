"""SIGTERM to ``rs-search worker --nproc 2`` itself, and to nothing else, as Kubernetes sends it
to a container's PID 1 (workers/kubernetes/job.yaml): the signal must reach the torchrun group,
which checkpoints and hands the trial back, and the worker exits 0.

Seen failing before ``ddp.launch`` passed SIGTERM on: the parent died of the signal (exit -15) and
left torchrun and its ranks training, orphaned, with the trial still RUNNING.

The signal is sent when rank 0 prints the first step of the trial's epoch 2 (its progress line,
relayed by torchrun to the worker's output), on the ``MICRO_STEPS`` space (128 steps an epoch,
halved across the two ranks): mid-epoch, however fast the host. Before, the test polled the study
for a finished epoch 1 and then signalled, and the trial could end in between.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest
from optuna.trial import TrialState

from tests.search.conftest import MICRO_STEPS, OutputLines, cli, cli_env, load, make_study

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (torchrun starts its ranks in sessions of their own, so a
    process group would miss them)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        children = [p for p, parent in parents.items() if parent == current]
        found += children
        todo += children
    return found


def test_sigterm_to_the_worker_process_alone_checkpoints_the_ddp_trial(
    postgres_url: str, tmp_path: Path
) -> None:
    make_study(
        postgres_url, tmp_path, "k8s", trials=1, budget=4, heartbeat=2, grace=30, space=MICRO_STEPS
    )
    worker = subprocess.Popen(
        cli("worker", "--study", "k8s", "--device", "cpu", "--nproc", "2", "--loader-workers", "0"),
        env=cli_env(postgres_url),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    tree: list[int] = []
    try:
        assert worker.stdout is not None
        output = OutputLines(worker.stdout)
        output.wait_for(r"^epoch 2/4: step 1/", timeout=300)
        assert worker.poll() is None
        tree = _descendants(worker.pid)
        assert len(tree) >= 3  # torchrun and two ranks
        worker.send_signal(signal.SIGTERM)  # the parent only
        assert worker.wait(timeout=120) is not None
        out = output.all(timeout=30)
    finally:
        for pid in [worker.pid, *tree]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        worker.wait()
    assert worker.returncode == 0, out[-3000:]
    assert "handed back" in out
    assert all(not Path(f"/proc/{pid}").exists() for pid in tree), "torchrun or a rank lives on"
    trials = load("k8s", postgres_url).get_trials()
    assert trials[0].state == TrialState.FAIL and trials[0].user_attrs["interrupted"] is True
    assert len(trials[0].user_attrs["curve"]) < 4  # stopped mid-trial
    assert [t.state for t in trials[1:]] == [TrialState.WAITING]  # handed back at once
