"""PostgreSQL goes away under a running search, on a private cluster this test starts and stops
(``tests/deploy/pgcluster.py``; never the shared server).

- A restart (a clean shutdown, then the server back on the same port): the workers reconnect,
  the search completes, and no finished result is lost.
- An outage longer than the retry window (``RS_SEARCH_STORAGE_RETRY_S=3``): the worker stops with
  one clear line, and its trial is handed back: after the server returns it is never RUNNING
  without a heartbeat, so the next worker fails it as stale and runs its retry, resumed from the
  checkpoint.

The database role has a password; no output may show it. The storage URL reaches every process
through ``RS_SEARCH_STORAGE``, as the deployment kit does it (never on a command line).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState

from tests.reliability.conftest import (
    PrivateDatabase,
    kill_study_processes,
    study_processes,
    unique,
)
from tests.search.conftest import MICRO_STEPS, OutputLines, cli, cli_env, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def _start(
    db: PrivateDatabase, study: str, cwd: Path, *, trials: int, budget: int, grace: int, **env: str
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        cli(
            "start",
            "--no-auto-scale",  # the rules are not what this tests
            "--space",
            str(MICRO_STEPS),
            "--budget",
            f"{budget}epochs",
            "--trials",
            str(trials),
            "--study",
            study,
            "--workers",
            "1",
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
            str(grace),
            "--loader-workers",
            "0",
            "--artifacts",
            "art",
            "--data",
            "synthetic:10",
        ),
        env=cli_env(db.url, **env),
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _trials(db: PrivateDatabase, study: str) -> list[optuna.trial.FrozenTrial]:
    """The study's trials, or none while the server is down or the study does not exist yet."""
    try:
        return optuna.load_study(study_name=study, storage=db.url).get_trials()
    except Exception:  # noqa: BLE001 - the server is down or the study not created yet
        return []


def _states(db: PrivateDatabase, study: str) -> set[TrialState]:
    return {t.state for t in _trials(db, study)}


def _running_without_heartbeat(db: PrivateDatabase) -> list[int]:
    """Numbers of RUNNING trials with no row in Optuna's ``trial_heartbeats`` table: no worker's
    stale-trial check would ever fail them, so their slot would be lost for good."""
    engine = sqlalchemy.create_engine(db.url)
    query = (
        "SELECT t.number FROM trials t LEFT JOIN trial_heartbeats h ON h.trial_id = t.trial_id "
        "WHERE t.state = 'RUNNING' AND h.trial_id IS NULL"
    )
    try:
        with engine.connect() as conn:
            return [int(r[0]) for r in conn.execute(sqlalchemy.text(query))]
    finally:
        engine.dispose()


def _clean(text: str, db: PrivateDatabase, what: str) -> None:
    assert "Traceback" not in text, f"{what} shows a traceback:\n{text[-3000:]}"
    assert db.password not in text, f"{what} shows the password"


def test_search_survives_a_postgres_restart(private_db: PrivateDatabase, tmp_path: Path) -> None:
    """Passes on main at fe6f793 (the study layer's storage facade retries every call). Seen
    failing on main at 06b7726 and 81eea4b: ``start``'s progress poll is not retried
    (Optuna's cache calls the storage's private ``_get_trials``, which the retry wrapper does
    not cover), so ``start`` exited 1 with ``error: StorageInternalError: An exception is raised
    during the commit...`` at the restart and printed no retry line, while its worker and the
    joined worker reconnected. (Before the test waited for ``start``'s own retry line, it passed
    when no poll fell inside the outage.)"""
    db, study = private_db, unique("restart")
    start = _start(db, study, tmp_path, trials=4, budget=2, grace=60)
    start_out, start_err = OutputLines(start.stdout), OutputLines(start.stderr)
    joined: subprocess.Popen[str] | None = None
    log = tmp_path / "art" / study / "logs" / "worker-0.log"
    try:
        wait_for(lambda: bool(_trials(db, study)), timeout=300, what="the study")
        # A second worker from "another machine" joins the search.
        joined = subprocess.Popen(
            cli("worker", "--study", study, "--device", "cpu", "--loader-workers", "0"),
            env=cli_env(db.url),
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        wait_for(
            lambda: {TrialState.COMPLETE, TrialState.RUNNING} <= _states(db, study),
            timeout=600,
            what="a finished trial and a running one",
        )
        before = {t.number: t.values for t in _trials(db, study) if t.state == TrialState.COMPLETE}
        db.cluster.stop("fast")
        # Down until start (its progress poll, every 2 s) and its worker have met the outage
        # (their retry lines), then back on the same port.
        retry = r"storage .*failed.*retry"
        start_err.wait_for(retry, timeout=120)
        wait_for(
            lambda: bool(re.search(retry, log.read_text(errors="replace"))),
            timeout=120,
            what="the worker's first retry",
        )
        db.cluster.start()
        start.wait(timeout=600)
        out, err = start_out.all(timeout=60), start_err.all(timeout=60)
        joined_out, _ = joined.communicate(timeout=300)
    finally:
        kill_study_processes(study)
    worker_log = log.read_text(errors="replace")
    assert start.returncode == 0, f"{out}\n{err}\n{worker_log}"
    assert joined.returncode == 0, joined_out
    for text, what in ((out + err, "start"), (worker_log, "worker-0"), (joined_out, "worker")):
        _clean(text, db, what)
    trials = _trials(db, study)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4, [
        (t.number, t.state, t.user_attrs.get("fail_reason")) for t in trials
    ]
    assert {t.number: t.values for t in trials if t.number in before} == before  # nothing lost
    assert all(len(t.user_attrs["curve"]) == 2 for t in trials)


def test_outage_past_the_retry_window_stops_the_worker_and_hands_its_trial_back(
    private_db: PrivateDatabase, tmp_path: Path
) -> None:
    """Seen failing on main at 06b7726, as issue 10 item 3 expected: the worker's log held the
    heartbeat thread's traceback and ended with ``error: UnboundLocalError: cannot access local
    variable 'updated_state'`` (or ``error: StorageInternalError: An exception is raised during
    the commit. This typically happens due to invalid data in the commit, e.g. exceeding max
    length.``), which names neither the server nor the outage. Still failing on main at fe6f793
    (the study layer's storage facade): the heartbeat thread's ``StorageError`` escapes as a
    thread traceback, the worker ends with the same ``UnboundLocalError`` line, and ``start``'s
    line gives Optuna's "invalid data ... exceeding max length" as the reason. The hand-back part
    (with the line checks skipped, it passed on main) was seen failing with the heartbeat
    switched off (``configure_heartbeat`` in ``search/study.py`` setting ``heartbeat_interval =
    None``): ``assert [0] == []``, trial 0 RUNNING with no heartbeat row. Fixed by
    ``rs_search/study/rdb.py``: the heartbeat thread skips a beat with a warning past the retry
    window, the reason is the driver's ("Connection refused"), and the ``StorageError`` that
    Optuna's trial loop hides behind ``UnboundLocalError`` is raised as itself."""
    db, study = private_db, unique("outage")
    start = _start(db, study, tmp_path, trials=2, budget=3, grace=5, RS_SEARCH_STORAGE_RETRY_S="3")
    log = tmp_path / "art" / study / "logs" / "worker-0.log"
    mid: list[int] = []  # the trial that is training when the server goes away
    try:

        def training() -> bool:
            mid[:] = [
                t.number
                for t in _trials(db, study)
                if t.state == TrialState.RUNNING and len(t.user_attrs.get("curve", [])) >= 1
            ]
            return bool(mid)

        wait_for(training, timeout=600, what="epoch 1 of a running trial")
        db.cluster.stop("fast")
        out, err = start.communicate(timeout=300)
        wait_for(lambda: not study_processes(study), timeout=300, what="the worker to stop")
    finally:
        kill_study_processes(study)
    worker_log = log.read_text(errors="replace")
    _clean(worker_log, db, "the worker")
    _clean(out + err, db, "start")
    where = f"127.0.0.1:{db.cluster.port}"
    lines = [line for line in worker_log.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert errors == [lines[-1]], f"the worker should end with one error line:\n{worker_log}"
    for line in (errors[0], err.strip().splitlines()[-1]):
        # Where (the server) and what (it cannot be reached), not Optuna's guess at a cause
        # ("invalid data in the commit, e.g. exceeding max length").
        assert line.startswith("error:") and where in line, line
        assert re.search(r"refused|unreachable|cannot reach|could not connect", line), line
        assert "max length" not in line, line
    assert start.returncode != 0

    db.cluster.start()
    assert _running_without_heartbeat(db) == []
    # Handed back: still RUNNING with its last heartbeat (stale after the grace period), or
    # failed with its retry queued.
    trials = _trials(db, study)
    it = trials[mid[0]]
    queued = [t for t in trials if t.system_attrs.get("failed_trial") == it.number]
    assert it.state == TrialState.RUNNING or (
        it.state == TrialState.FAIL and [t.state for t in queued] == [TrialState.WAITING]
    ), [(t.number, t.state, t.system_attrs) for t in trials]
    # The next worker fails the stale trial, runs its retry from the checkpoint, then the rest.
    nxt = subprocess.run(
        cli("worker", "--study", study, "--device", "cpu", "--loader-workers", "0"),
        env=cli_env(db.url),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert nxt.returncode == 0, nxt.stdout + nxt.stderr
    _clean(nxt.stdout + nxt.stderr, db, "the next worker")
    trials = _trials(db, study)
    retries = [t for t in trials if "failed_trial" in t.system_attrs]
    assert len(retries) == 1, [(t.number, t.state, t.system_attrs) for t in trials]
    assert retries[0].state == TrialState.COMPLETE
    assert retries[0].user_attrs.get("resumed_from_epoch", 0) >= 1  # from the checkpoint
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 2
