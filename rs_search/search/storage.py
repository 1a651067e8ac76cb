"""The study's storage: one RDBStorage per process, heartbeats, retries, and read-only look-ups.

- ``open_storage`` builds the one ``RDBStorage`` a process uses (every ``Study`` object holds a
  connection pool, DESIGN.md section 5): our engine settings (``pool_pre_ping`` and a bounded pool
  for PostgreSQL), Optuna's heartbeat (``heartbeat_interval``/``grace_period``) and
  ``RetryHeartbeatStaleTrialCallback`` (the 4.9+ name of ``RetryFailedTrialCallback``), which
  re-queues a dead worker's trial with ``failed_trial`` = the original's number.
- ``RetryingRDBStorage`` retries a storage call that failed because the database blinked
  (connection refused or dropped) with exponential backoff, so a finished trial's result is not
  lost to a restart of PostgreSQL. A write that committed before the connection dropped is
  recognised on retry (finishing an already finished trial with the same state is success).
- ``study_names`` lists studies without creating Optuna's tables (an unknown study must leave
  nothing behind in the database it was looked up in).
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import optuna
from optuna.exceptions import StorageInternalError, UpdateFinishedTrialError
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState
from sqlalchemy import inspect, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError

from rs_search.errors import StorageError
from rs_search.storage.engine import engine_kwargs, make_engine
from rs_search.storage.url import mask_url, resolve_storage_url

_log = logging.getLogger("rs_search.search.storage")

F = TypeVar("F", bound=Callable[..., Any])

# Backoff 0.5, 1, 2, 4, 8, 16, 16, ... seconds; about two minutes in all by default.
ENV_RETRY_SECONDS = "RS_SEARCH_STORAGE_RETRY_S"
DEFAULT_RETRY_SECONDS = 120.0


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


def _retrying(name: str, method: F) -> F:
    @functools.wraps(method)
    def wrapper(self: RetryingRDBStorage, *args: Any, **kwargs: Any) -> Any:
        deadline = time.monotonic() + self.retry_seconds
        delay = 0.5
        attempt = 0
        while True:
            try:
                return method(self, *args, **kwargs)
            except UpdateFinishedTrialError:
                # The earlier attempt committed before its connection dropped.
                if attempt and name == "set_trial_state_values" and _already(self, args, kwargs):
                    return True
                raise
            except (SQLAlchemyError, StorageInternalError) as exc:
                if not is_transient(exc) or time.monotonic() + delay > deadline:
                    raise
                attempt += 1
                _log.warning(
                    "storage %s failed (%s); retry %d in %.1fs",
                    name,
                    type(exc).__name__,
                    attempt,
                    delay,
                )
                self.engine.dispose()  # drop pooled connections to the old server
                time.sleep(delay)
                delay = min(delay * 2, 16.0)

    return wrapper  # type: ignore[return-value]


def _already(storage: RDBStorage, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    trial_id = args[0] if args else kwargs["trial_id"]
    state = args[1] if len(args) > 1 else kwargs["state"]
    return bool(storage.get_trial(trial_id).state == state and state.is_finished())


class RetryingRDBStorage(RDBStorage):
    """``RDBStorage`` whose calls survive a database restart (see the module docstring)."""

    retry_seconds: float = DEFAULT_RETRY_SECONDS


_RETRIED = (
    "create_new_study",
    "delete_study",
    "set_study_user_attr",
    "set_study_system_attr",
    "get_study_id_from_name",
    "get_study_name_from_id",
    "get_study_directions",
    "get_study_user_attrs",
    "get_study_system_attrs",
    "get_all_studies",
    "create_new_trial",
    "set_trial_param",
    "get_trial_id_from_study_id_trial_number",
    "set_trial_state_values",
    "set_trial_intermediate_value",
    "set_trial_user_attr",
    "set_trial_system_attr",
    "get_trial",
    "get_all_trials",
    "get_n_trials",
    "record_heartbeat",
    "_get_stale_trial_ids",
    "get_best_trial",
    "get_trial_param",
    "get_trial_number_from_id",
)
for _name in _RETRIED:
    if hasattr(RDBStorage, _name):
        setattr(RetryingRDBStorage, _name, _retrying(_name, getattr(RDBStorage, _name)))


def open_storage(
    storage: str | URL | None,
    *,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
    max_retry: int | None = 3,
) -> RetryingRDBStorage:
    """The process's RDBStorage. With ``heartbeat_interval`` set, running trials send heartbeats
    and a stale one is failed and re-queued (at most ``max_retry`` times) by the next worker that
    asks for a trial. Raises ``StorageError`` (password masked) when the database is unreachable."""
    url = storage if isinstance(storage, URL) else resolve_storage_url(storage)
    make_engine(url).dispose()  # one clear line when the server is down
    callback = (
        RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
        if heartbeat_interval is not None
        else None
    )
    try:
        rdb = RetryingRDBStorage(
            url.render_as_string(hide_password=False),
            engine_kwargs=engine_kwargs(url),
            heartbeat_interval=heartbeat_interval,
            grace_period=grace_period,
            heartbeat_stale_trial_callback=callback,
        )
    except (SQLAlchemyError, StorageInternalError, RuntimeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise StorageError(
            f"cannot open study storage {mask_url(url)}: {_scrub(reason, url)}"
        ) from None
    retry_env = os.environ.get(ENV_RETRY_SECONDS)
    if retry_env:
        rdb.retry_seconds = float(retry_env)
    return rdb


def _scrub(message: str, url: URL) -> str:
    return message.replace(str(url.password), "***") if url.password else message


def sqlite_file_missing(url: URL) -> bool:
    """A SQLite URL whose file does not exist yet (connecting would create it)."""
    if url.get_backend_name() != "sqlite":
        return False
    database = url.database
    if not database or database == ":memory:":
        return False
    return not Path(database).exists()


def study_names(storage: str | URL | None) -> list[str]:
    """Names of the studies in ``storage``; creates nothing (no tables, no SQLite file)."""
    url = storage if isinstance(storage, URL) else resolve_storage_url(storage)
    if sqlite_file_missing(url):
        return []
    engine = make_engine(url)
    try:
        if not inspect(engine).has_table("studies"):
            return []
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT study_name FROM studies ORDER BY study_id"))
            return [str(r[0]) for r in rows]
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", exc)).splitlines()[0]
        raise StorageError(
            f"cannot read studies from {mask_url(url)}: {_scrub(reason, url)}"
        ) from None
    finally:
        engine.dispose()


def unknown_study_message(name: str, names: list[str], url: URL) -> str:
    if not names:
        return (
            f"study {name!r} not found in {mask_url(url)}: it has no studies; "
            "create one with rs-search start"
        )
    shown = ", ".join(names[:20]) + (f" (and {len(names) - 20} more)" if len(names) > 20 else "")
    return f"study {name!r} not found in {mask_url(url)}; studies there: {shown}"


def count_states(study: optuna.Study) -> dict[str, int]:
    """Trials by state plus ``finished`` (counts against the trial budget, see attrs)."""
    from rs_search.search import attrs

    trials = study.get_trials(deepcopy=False)
    counts = {s.name.lower(): 0 for s in TrialState}
    for t in trials:
        counts[t.state.name.lower()] += 1
    counts["finished"] = sum(1 for t in trials if attrs.is_finished(t))
    counts["rejected"] = sum(
        1 for t in trials if attrs.REJECTED in t.user_attrs and t.state == TrialState.COMPLETE
    )
    return counts
