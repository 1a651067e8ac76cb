"""A waiting trial is claimed by exactly one worker, on SQLite as on PostgreSQL.

Found by ``benchmarks/orchestration.py``: with 4 workers on one SQLite file a budget slot was
claimed by two workers, both ran it, and the second to finish died with Optuna's "Cannot tell a
PRUNED trial". Optuna's claim reads the trial (``SELECT ... FOR UPDATE``) and then updates it;
SQLite has no row locks and Python's sqlite3 driver opens the transaction only at the UPDATE, so
two processes could both read WAITING and both write RUNNING. The facade claims with one
conditional UPDATE (``ResilientStorage.set_trial_state_values``), which one process wins on any
database."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path
from typing import Any

import optuna
import pytest

from rs_search.study.queue import QueuedStudy, QueueEmpty
from rs_search.study.storage import open_storage

TRIALS = 60
WORKERS = 4


def _claim_all(url: str, start: Any, out: Path) -> None:
    rdb = open_storage(url, retry_seconds=30)
    study = QueuedStudy(study_name="claims", storage=rdb)
    start.wait()  # every worker has its storage open: they all ask at once
    got: list[int] = []
    while True:
        try:
            trial = study.ask()
        except QueueEmpty:
            break
        got.append(trial.number)
    rdb.engine.dispose()
    out.write_text(json.dumps(got))


def _race(url: str, tmp_path: Path) -> list[int]:
    rdb = open_storage(url, retry_seconds=30)
    study = optuna.create_study(study_name="claims", storage=rdb)
    for i in range(TRIALS):
        study.enqueue_trial({}, user_attrs={"slot": i})
    rdb.engine.dispose()
    ctx = multiprocessing.get_context("fork")
    start = ctx.Barrier(WORKERS)
    outs = [tmp_path / f"claims-{i}.json" for i in range(WORKERS)]
    procs = [ctx.Process(target=_claim_all, args=(url, start, out)) for out in outs]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
        assert proc.exitcode == 0
    return [n for out in outs for n in json.loads(out.read_text())]


@pytest.mark.slow
def test_each_waiting_trial_is_claimed_once_on_sqlite(tmp_path: Path) -> None:
    claimed = _race(f"sqlite:///{tmp_path / 'study.db'}", tmp_path)
    assert sorted(claimed) == list(range(TRIALS))  # none twice, none left behind


@pytest.mark.slow
@pytest.mark.postgres
def test_each_waiting_trial_is_claimed_once_on_postgresql(
    postgres_url: str, tmp_path: Path
) -> None:
    claimed = _race(postgres_url, tmp_path)
    assert sorted(claimed) == list(range(TRIALS))


def test_a_claim_of_a_running_or_finished_trial_is_refused(tmp_path: Path) -> None:
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    rdb = open_storage(f"sqlite:///{tmp_path / 'study.db'}", retry_seconds=30)
    try:
        study = optuna.create_study(study_name="s", storage=rdb)
        study.enqueue_trial({})
        study.enqueue_trial({})
        first, second = (t._trial_id for t in study.get_trials())
        assert rdb.set_trial_state_values(first, TrialState.RUNNING) is True
        assert rdb.set_trial_state_values(first, TrialState.RUNNING) is False
        stored = rdb.get_trial(first)
        assert stored.state == TrialState.RUNNING and stored.datetime_start is not None
        rdb.set_trial_state_values(second, TrialState.RUNNING)
        rdb.set_trial_state_values(second, TrialState.COMPLETE, values=[1.0])
        with pytest.raises(UpdateFinishedTrialError):  # as Optuna's own claim
            rdb.set_trial_state_values(second, TrialState.RUNNING)
        assert rdb.get_trial(second).state == TrialState.COMPLETE
    finally:
        rdb.engine.dispose()
