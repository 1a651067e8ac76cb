"""The storage facade against a real database: the Optuna it was written for, heartbeats set at
construction, and what happens when the database drops a connection.

A "lost reply" is made real: a SQLAlchemy ``after_commit`` listener raises a connection error
right after the database committed, once, which is what a client sees when the server goes away
between committing and answering. Calls that are safe to repeat are repeated; creating a trial
and changing its state are read back instead (issue 10, audit).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.storages import RDBStorage
from optuna.trial import TrialState
from sqlalchemy import event
from sqlalchemy.exc import OperationalError

from rs_search.errors import StorageError
from rs_search.study.queue import fail_stale
from rs_search.study.rdb import (
    CREATE_TOKEN,
    OPTUNA_VERSION,
    Heartbeat,
    ResilientStorage,
    storage_error,
)
from rs_search.study.storage import heartbeat_ages, open_storage

optuna.logging.set_verbosity(optuna.logging.WARNING)


class LostReply:
    """Arm it, and the next commit of ``storage`` succeeds in the database but the caller gets a
    dropped connection."""

    def __init__(self, storage: ResilientStorage) -> None:
        self.armed = 0
        self.fired = 0
        event.listen(storage.scoped_session, "after_commit", self._after_commit)

    def arm(self) -> None:
        self.armed = 1

    def _after_commit(self, session: object) -> None:
        if self.armed:
            self.armed = 0
            self.fired += 1
            raise OperationalError(
                "COMMIT", {}, ConnectionError("server closed the connection unexpectedly")
            )


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[ResilientStorage]:
    rdb = open_storage(f"sqlite:///{tmp_path / 'study.db'}", retry_seconds=30)
    yield rdb
    rdb.engine.dispose()


def test_the_facade_is_pinned_to_the_optuna_it_was_written_against() -> None:
    """An Optuna upgrade must be deliberate: the facade overrides these private methods of
    ``RDBStorage`` (``_CachedStorage`` calls them directly) and relies on ``Study``'s claim."""
    major_minor = ".".join(optuna.__version__.split(".")[:2])
    assert major_minor == OPTUNA_VERSION, (
        f"optuna {optuna.__version__}: the storage facade was written against {OPTUNA_VERSION}; "
        "re-read optuna/storages/_rdb/storage.py and _cached_storage.py, then update it"
    )
    expected = {
        "_get_trials": [
            "self",
            "study_id",
            "states",
            "included_trial_ids",
            "trial_id_greater_than",
        ],
        "_create_new_trial": ["self", "study_id", "template_trial"],
        "_set_trial_param": [
            "self",
            "trial_id",
            "param_name",
            "param_value_internal",
            "distribution",
            "previous_distribution",
        ],
        "_get_best_trial_id": ["self", "study_id", "direction"],
        "_get_stale_trial_ids": ["self", "study_id"],
    }
    for name, params in expected.items():
        assert list(inspect.signature(getattr(RDBStorage, name)).parameters) == params, name
    assert hasattr(optuna.Study, "_pop_waiting_trial_id")


def test_heartbeat_settings_are_given_at_construction(tmp_path: Path) -> None:
    rdb = open_storage(
        f"sqlite:///{tmp_path / 'hb.db'}", heartbeat=Heartbeat(interval=2, grace=7, max_retry=1)
    )
    try:
        assert rdb.get_heartbeat_interval() == 2 and rdb.grace_period == 7
        callback = rdb.get_heartbeat_stale_trial_callback()
        assert isinstance(callback, optuna.storages.RetryHeartbeatStaleTrialCallback)
    finally:
        rdb.engine.dispose()


def test_a_read_whose_connection_drops_is_repeated(
    storage: ResilientStorage, caplog: pytest.LogCaptureFixture
) -> None:
    study = optuna.create_study(study_name="s", storage=storage)
    study.enqueue_trial({}, user_attrs={"k": 1})
    drop = LostReply(storage)
    drop.arm()
    with caplog.at_level(logging.WARNING, logger="rs_search.study.storage"):
        (trial,) = storage.get_all_trials(study._study_id)
    assert drop.fired == 1 and trial.user_attrs == {"k": 1}
    assert "storage get_trials failed" in caplog.text and "retry 1" in caplog.text


def test_a_created_trial_is_not_created_twice(storage: ResilientStorage) -> None:
    study = optuna.create_study(study_name="s", storage=storage)
    drop = LostReply(storage)
    drop.arm()
    study.enqueue_trial({}, user_attrs={"k": 1})  # the commit went through; its reply did not
    assert drop.fired == 1
    (trial,) = study.get_trials()
    assert trial.state == TrialState.WAITING and trial.user_attrs == {"k": 1}
    assert CREATE_TOKEN in trial.system_attrs


def test_finishing_a_trial_whose_reply_was_lost_succeeds(storage: ResilientStorage) -> None:
    study = optuna.create_study(study_name="s", storage=storage, directions=["maximize"])
    trial = study.ask()
    drop = LostReply(storage)
    drop.arm()
    assert storage.set_trial_state_values(trial._trial_id, TrialState.COMPLETE, values=[1.5])
    assert drop.fired == 1
    (done,) = study.get_trials()
    assert done.state == TrialState.COMPLETE and done.values == [1.5]


def test_an_ambiguous_claim_is_given_up_and_comes_back_as_a_retry(tmp_path: Path) -> None:
    """The claim (WAITING -> RUNNING) committed but its reply was lost: it may have been another
    worker's. The facade gives it up and records a heartbeat, so nobody running it makes it
    stale after the grace period; the stale check then fails it and queues its retry, instead of
    leaving a RUNNING trial without a heartbeat that no check would ever see."""
    url = f"sqlite:///{tmp_path / 'claim.db'}"
    rdb = open_storage(url, heartbeat=Heartbeat(interval=1, grace=1, max_retry=3))
    try:
        study = optuna.create_study(study_name="s", storage=rdb)
        study.enqueue_trial({}, user_attrs={"slot": 0})
        (waiting,) = study.get_trials()
        drop = LostReply(rdb)
        drop.arm()
        assert rdb.set_trial_state_values(waiting._trial_id, TrialState.RUNNING) is False
        assert drop.fired == 1
        assert rdb.get_trial(waiting._trial_id).state == TrialState.RUNNING
        ages = heartbeat_ages(rdb.engine, study._study_id)
        assert list(ages) == [0]  # the heartbeat that makes it visible to the stale check
        from tests.search.conftest import wait_for

        def retried() -> bool:
            fail_stale(study)
            return len(study.get_trials()) == 2

        wait_for(retried, timeout=30, every=0.5, what="the given-up trial to be retried")
        first, retry = study.get_trials()
        assert first.state == TrialState.FAIL and retry.state == TrialState.WAITING
        assert retry.user_attrs == {"slot": 0} and retry.system_attrs["failed_trial"] == 0
    finally:
        rdb.engine.dispose()


def test_giving_up_is_one_line_without_the_password(storage: ResilientStorage) -> None:
    from sqlalchemy.engine import make_url

    url = make_url("postgresql+psycopg://rs:s3cret@db.example:5432/study")
    exc = OperationalError(
        "connect", {}, ConnectionError('connection to "rs:s3cret@db.example" refused\nmore')
    )
    error = storage_error(exc, url, "reach")
    assert isinstance(error, StorageError)
    assert "s3cret" not in str(error) and "\n" not in str(error)
    assert str(error).startswith("cannot reach postgresql+psycopg://rs:***@db.example:5432/study:")

    study = optuna.create_study(study_name="s", storage=storage)
    storage.retry_seconds = 0  # no time to retry: the translated error, not a traceback
    drop = LostReply(storage)
    drop.arm()
    with pytest.raises(StorageError, match=r"gave up after 0 retries"):
        storage.get_all_trials(study._study_id)
