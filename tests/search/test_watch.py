"""``start`` watches its local workers; when the watching fails (the poller raises: a database
that stays down past the retry window, a bug), the workers are stopped and waited for, never left
training orphaned (issue 10, audit). A real ``rs-search worker`` on real PostgreSQL, signalled
when it prints the first step of its trial.

Seen failing before the fix: ``watch`` re-raised at once and the worker trained on (``poll()``
of the process was None), its trial RUNNING.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from optuna.trial import TrialState

from rs_search.errors import StorageError
from rs_search.search.local import LocalWorkers, watch
from tests.search.conftest import MICRO_STEPS, OutputLines, cli, cli_env, load, make_study

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def test_a_failing_poller_stops_the_workers(postgres_url: str, tmp_path: Path) -> None:
    make_study(postgres_url, tmp_path, "orphan", trials=1, budget=3, space=MICRO_STEPS)
    worker = subprocess.Popen(
        cli("worker", "--study", "orphan", "--device", "cpu", "--loader-workers", "0"),
        env=cli_env(postgres_url),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    polls = []

    def poll() -> bool:
        polls.append(1)
        raise StorageError("the study database stayed unreachable")

    try:
        assert worker.stdout is not None
        output = OutputLines(worker.stdout)
        output.wait_for(r"^epoch 1/3: step 1/128, ", timeout=240)  # it trains
        workers = LocalWorkers(procs=[worker], logs=[])  # type: ignore[list-item]
        with pytest.raises(StorageError, match="stayed unreachable"):
            watch(workers, poll)
        assert worker.poll() is not None, "the worker trains on, orphaned"
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert polls == [1]
    assert worker.returncode == 0  # stopped by SIGTERM: checkpointed, handed back, exit 0
    assert "handed back" in output.all(timeout=30)
    trials = load("orphan", postgres_url).get_trials()
    assert trials[0].state == TrialState.FAIL and trials[0].user_attrs["interrupted"] is True
    assert [t.state for t in trials[1:]] == [TrialState.WAITING]  # its retry, queued at once
