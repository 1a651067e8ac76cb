"""``ResilientStorage``: Optuna's ``RDBStorage`` with every call that reaches the database listed
by name, and how it recovers when the connection drops (the storage facade's core, see
``rs_search.study.storage``).

Reads, and writes that leave the same row when repeated, are repeated with exponential backoff
(0.5, 1, 2, 4, 8, 16, 16, ... s within ``retry_seconds``), so a finished trial's result is not lost
to a restart of PostgreSQL. Creating a trial and changing a trial's state are not safe to repeat
(a commit whose reply was lost would leave a second trial, or a claimed trial with no heartbeat):
after an ambiguous failure the trial is read back first (issue 10, audit). Written against Optuna
5.1, whose ``_CachedStorage`` calls some private methods of the backend directly; the version is
pinned by ``tests/study/test_storage.py``.
"""

from __future__ import annotations

import copy
import logging
import time
import uuid
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from optuna.exceptions import StorageInternalError, UpdateFinishedTrialError
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages._rdb import models
from optuna.storages._rdb.storage import _create_scoped_session
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import update
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError

from rs_search.errors import StorageError
from rs_search.storage.engine import engine_kwargs
from rs_search.storage.url import mask_url

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution
    from optuna.study import StudyDirection
    from optuna.study._frozen import FrozenStudy

_log = logging.getLogger("rs_search.study.storage")

T = TypeVar("T")

OPTUNA_VERSION = "5.1"  # the Optuna release this facade was written against (major.minor)
# Backoff 0.5, 1, 2, 4, 8, 16, 16, ... seconds; about two minutes in all by default.
DEFAULT_RETRY_SECONDS = 120.0
# A trial system attribute naming the call that created the trial, so that after an ambiguous
# failure the trial can be found instead of created twice.
CREATE_TOKEN = "rs_search:create_token"


# -- errors ------------------------------------------------------------------------------------


def storage_error(exc: BaseException, url: URL, doing: str) -> StorageError:
    """``cannot <doing> <url>: <reason>``: one line, the URL masked, the password scrubbed from
    the driver's reason (it can quote the DSN)."""
    lines = str(_driver_error(exc)).strip().splitlines()
    reason = lines[0] if lines else type(exc).__name__
    if url.password:
        reason = reason.replace(str(url.password), "***")
    return StorageError(f"cannot {doing} {mask_url(url)}: {reason}")


def _driver_error(exc: BaseException) -> BaseException:
    """The driver's own error behind ``exc``: Optuna wraps a failed commit in a
    ``StorageInternalError`` whose text guesses at a cause ("invalid data in the commit, e.g.
    exceeding max length") when the server is simply gone."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, DBAPIError) and current.orig is not None:
            return current.orig
        current = current.__cause__ or current.__context__
    return exc


def unmasked(exc: BaseException) -> BaseException:
    """The ``StorageError`` that Optuna's trial loop hides behind an ``UnboundLocalError``
    (optuna/study/_optimize.py ``_run_trial``: when telling the result fails and reading the
    trial back fails too, its ``finally`` reads an unbound ``updated_state``), else ``exc``."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, StorageError):
            return current
        current = current.__cause__ or current.__context__
    return exc


def is_transient(exc: BaseException) -> bool:
    """A dropped or refused connection (worth retrying), not a bad query or a logic error."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OperationalError | InterfaceError):
            return True
        if isinstance(current, DBAPIError) and current.connection_invalidated:
            return True
        current = current.__cause__ or current.__context__
    return False


# -- the storage ---------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Heartbeat:
    """Optuna's heartbeat for a worker's storage: a running trial beats every ``interval``
    seconds; one silent for ``grace`` seconds is failed and retried (at most ``max_retry``
    times) by the next worker that looks."""

    interval: int
    grace: int
    max_retry: int | None = 3


class _Backoff:
    """Waits between attempts; gives up (raises) on a non-transient error or after the window."""

    def __init__(self, storage: ResilientStorage, name: str) -> None:
        self.storage = storage
        self.name = name
        self.deadline = time.monotonic() + storage.retry_seconds
        self.delay = 0.5
        self.attempt = 0

    def wait(self, exc: Exception) -> None:
        if not is_transient(exc):
            raise exc
        if time.monotonic() + self.delay > self.deadline:
            error = storage_error(exc, self.storage.url_object, f"{self.name} in")
            raise StorageError(f"{error} (gave up after {self.attempt} retries)") from exc
        self.attempt += 1
        _log.warning(
            "storage %s failed (%s); retry %d in %.1fs",
            self.name,
            type(exc).__name__,
            self.attempt,
            self.delay,
        )
        self.storage.engine.dispose()  # drop pooled connections to the old server
        time.sleep(self.delay)
        self.delay = min(self.delay * 2, 16.0)


_AGAIN = object()  # a recovery's answer: the write did not happen, try it again
_FAILURES = (SQLAlchemyError, StorageInternalError)


class ResilientStorage(RDBStorage):
    """``RDBStorage`` whose calls survive a database restart (see the module docstring).

    Optuna's ``_CachedStorage`` (which every ``Study`` wraps around its storage) calls some
    private methods of the backend directly (``_get_trials``, ``_create_new_trial``,
    ``_set_trial_param``, ``_get_best_trial_id``), so those are the ones covered here.
    """

    def __init__(
        self, url: URL, *, heartbeat: Heartbeat | None = None, retry_seconds: float
    ) -> None:
        super().__init__(
            url.render_as_string(hide_password=False),
            engine_kwargs=engine_kwargs(url),
            heartbeat_interval=None if heartbeat is None else heartbeat.interval,
            grace_period=None if heartbeat is None else heartbeat.grace,
            heartbeat_stale_trial_callback=(
                None
                if heartbeat is None
                else RetryHeartbeatStaleTrialCallback(max_retry=heartbeat.max_retry)
            ),
        )
        self.url_object = url
        self.retry_seconds = retry_seconds

    def _repeat(self, name: str, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """A call that is safe to repeat: repeat it until it goes through."""
        backoff = _Backoff(self, name)
        while True:
            try:
                return call(*args, **kwargs)
            except _FAILURES as exc:
                backoff.wait(exc)

    def _once(self, name: str, write: Callable[[], T], recover: Callable[[], Any]) -> T:
        """A write that is not safe to repeat. After a transient failure its outcome is unknown
        (it may have committed before the connection dropped): ``recover`` reads the database and
        returns the outcome, or ``_AGAIN`` when the write did not happen."""
        backoff = _Backoff(self, name)
        while True:
            try:
                return write()
            except _FAILURES as exc:
                backoff.wait(exc)
            outcome = recover()
            if outcome is not _AGAIN:
                return outcome  # type: ignore[no-any-return]

    # -- reads: repeated ---------------------------------------------------------------------

    def get_study_id_from_name(self, study_name: str) -> int:
        return self._repeat("get_study_id_from_name", super().get_study_id_from_name, study_name)

    def get_study_name_from_id(self, study_id: int) -> str:
        return self._repeat("get_study_name_from_id", super().get_study_name_from_id, study_id)

    def get_study_directions(self, study_id: int) -> list[StudyDirection]:
        return self._repeat("get_study_directions", super().get_study_directions, study_id)

    def get_study_user_attrs(self, study_id: int) -> dict[str, Any]:
        return self._repeat("get_study_user_attrs", super().get_study_user_attrs, study_id)

    def get_study_system_attrs(self, study_id: int) -> dict[str, Any]:
        return self._repeat("get_study_system_attrs", super().get_study_system_attrs, study_id)

    def get_all_studies(self) -> list[FrozenStudy]:
        return self._repeat("get_all_studies", super().get_all_studies)

    def get_trial(self, trial_id: int) -> FrozenTrial:
        return self._repeat("get_trial", super().get_trial, trial_id)

    def get_trial_user_attrs(self, trial_id: int) -> dict[str, Any]:
        return self._repeat("get_trial_user_attrs", super().get_trial_user_attrs, trial_id)

    def get_trial_system_attrs(self, trial_id: int) -> dict[str, Any]:
        return self._repeat("get_trial_system_attrs", super().get_trial_system_attrs, trial_id)

    def get_trial_param(self, trial_id: int, param_name: str) -> float:
        return self._repeat("get_trial_param", super().get_trial_param, trial_id, param_name)

    def get_trial_id_from_study_id_trial_number(self, study_id: int, trial_number: int) -> int:
        return self._repeat(
            "get_trial_id_from_study_id_trial_number",
            super().get_trial_id_from_study_id_trial_number,
            study_id,
            trial_number,
        )

    def _get_trials(
        self,
        study_id: int,
        states: Container[TrialState] | None,
        included_trial_ids: set[int],
        trial_id_greater_than: int,
    ) -> list[FrozenTrial]:
        return self._repeat(
            "get_trials",
            super()._get_trials,
            study_id,
            states,
            included_trial_ids,
            trial_id_greater_than,
        )

    def _get_best_trial_id(self, study_id: int, direction: StudyDirection) -> int:
        return self._repeat("get_best_trial_id", super()._get_best_trial_id, study_id, direction)

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        return self._repeat("get_stale_trial_ids", super()._get_stale_trial_ids, study_id)

    # -- writes that leave the same row when repeated: repeated --------------------------------

    def set_study_user_attr(self, study_id: int, key: str, value: Any) -> None:
        self._repeat("set_study_user_attr", super().set_study_user_attr, study_id, key, value)

    def set_study_system_attr(self, study_id: int, key: str, value: Any) -> None:
        self._repeat("set_study_system_attr", super().set_study_system_attr, study_id, key, value)

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._repeat("set_trial_user_attr", super().set_trial_user_attr, trial_id, key, value)

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._repeat("set_trial_system_attr", super().set_trial_system_attr, trial_id, key, value)

    def set_trial_intermediate_value(self, trial_id: int, step: int, value: float) -> None:
        self._repeat(
            "set_trial_intermediate_value",
            super().set_trial_intermediate_value,
            trial_id,
            step,
            value,
        )

    def _set_trial_param(
        self,
        trial_id: int,
        param_name: str,
        param_value_internal: float,
        distribution: BaseDistribution,
        previous_distribution: BaseDistribution | None,
    ) -> None:
        # A second insert of the same parameter is an integrity error Optuna ignores.
        self._repeat(
            "set_trial_param",
            super()._set_trial_param,
            trial_id,
            param_name,
            param_value_internal,
            distribution,
            previous_distribution,
        )

    def record_heartbeat(self, trial_id: int) -> None:
        """Runs on Optuna's heartbeat thread, where an exception ends the thread with a traceback:
        past the retry window the beat is skipped with one warning and the thread beats again
        at the next interval. The worker's own next call meets the outage and stops it; if the
        outage outlasts the grace period, the trial goes stale and is retried elsewhere."""
        try:
            self._repeat("record_heartbeat", super().record_heartbeat, trial_id)
        except StorageError as exc:
            _log.warning("heartbeat not recorded: %s", exc)

    # -- writes that are not safe to repeat: read back first ----------------------------------

    def create_new_study(
        self, directions: Sequence[StudyDirection], study_name: str | None = None
    ) -> int:
        """After an ambiguous failure a study of that name is the one created (a second creator
        within the same second would share it)."""
        create = super().create_new_study

        def recover() -> Any:
            if study_name is None:
                return _AGAIN  # an unnamed study cannot be found again; Optuna names a new one
            try:
                return self.get_study_id_from_name(study_name)
            except KeyError:
                return _AGAIN

        return self._once(
            "create_new_study", lambda: create(directions, study_name=study_name), recover
        )

    def delete_study(self, study_id: int) -> None:
        delete = super().delete_study

        def recover() -> Any:
            try:
                self.get_study_name_from_id(study_id)
            except KeyError:
                return None  # gone: the delete went through
            return _AGAIN

        self._once("delete_study", lambda: delete(study_id), recover)

    def _create_new_trial(
        self, study_id: int, template_trial: FrozenTrial | None = None
    ) -> FrozenTrial:
        """The new trial carries a fresh token (a system attribute); after an ambiguous failure
        the trial holding it is the one created."""
        token = uuid.uuid4().hex
        template = _with_token(template_trial, token)
        create = super()._create_new_trial

        def recover() -> Any:
            for trial in self._get_trials(study_id, None, set(), -1):
                if trial.system_attrs.get(CREATE_TOKEN) == token:
                    return trial
            return _AGAIN

        return self._once("create_new_trial", lambda: create(study_id, template), recover)

    def set_trial_state_values(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
    ) -> bool:
        """After an ambiguous failure the trial is read back. Finishing (or handing back) a trial
        that now has that state succeeded. A claim (WAITING -> RUNNING) of a trial that is now
        RUNNING may have been this process's or another's: it is given up, and a heartbeat is
        recorded for it, so that if it was this process's and nobody runs it, the next worker's
        stale-trial check fails it and queues its retry (a claimed trial with no heartbeat would
        stay RUNNING for ever)."""

        def write() -> bool:
            if state == TrialState.RUNNING and values is None:
                return self._claim(trial_id)
            return super(ResilientStorage, self).set_trial_state_values(
                trial_id, state, values=values
            )

        def recover() -> Any:
            now = self.get_trial(trial_id).state
            if state == TrialState.RUNNING:
                if now == TrialState.WAITING:
                    return _AGAIN
                if now == TrialState.RUNNING:
                    self.record_heartbeat(trial_id)
                    _log.warning(
                        "claim of trial id %d is ambiguous after a storage failure; given up "
                        "(a heartbeat was recorded so that it is retried if nobody runs it)",
                        trial_id,
                    )
                return False
            if now == state:
                return True
            if now.is_finished():
                raise UpdateFinishedTrialError(
                    f"trial id {trial_id} is already finished ({now.name})"
                )
            return _AGAIN

        return self._once("set_trial_state_values", write, recover)

    def _claim(self, trial_id: int) -> bool:
        """WAITING -> RUNNING in one conditional UPDATE, which exactly one process wins on any
        database. Optuna's claim reads the row (``SELECT ... FOR UPDATE``) and then writes it:
        SQLite has no row locks and Python's sqlite3 driver begins the transaction only at the
        write, so two workers on one SQLite file both claimed a trial, both ran it, and the
        second to finish died on "Cannot tell a COMPLETE trial" (measured with 4 workers by
        ``benchmarks/orchestration.py``). As Optuna's: False when another process holds the
        trial, ``UpdateFinishedTrialError`` when it has finished."""
        trials = models.TrialModel.__table__
        claim = (
            update(trials)
            .where(trials.c.trial_id == trial_id, trials.c.state == TrialState.WAITING)
            # naive UTC, as Optuna stores it (models.TrialModel.datetime_start)
            .values(state=TrialState.RUNNING, datetime_start=datetime.now(UTC).replace(tzinfo=None))
        )
        with _create_scoped_session(self.scoped_session) as session:
            won = session.execute(claim).rowcount == 1  # type: ignore[attr-defined]
        if won:
            return True
        now = self.get_trial(trial_id).state
        if now.is_finished():
            raise UpdateFinishedTrialError(f"trial id {trial_id} is already finished ({now.name})")
        return False


def _with_token(template: FrozenTrial | None, token: str) -> FrozenTrial:
    """``template`` (or what Optuna creates without one: a RUNNING trial started now) carrying
    ``token`` among its system attributes."""
    if template is None:
        return FrozenTrial(
            number=-1,
            state=TrialState.RUNNING,
            value=None,
            values=None,
            datetime_start=datetime.now(),
            datetime_complete=None,
            params={},
            distributions={},
            user_attrs={},
            system_attrs={CREATE_TOKEN: token},
            intermediate_values={},
            trial_id=-1,
        )
    out = copy.deepcopy(template)
    out.system_attrs = {**template.system_attrs, CREATE_TOKEN: token}
    return out
