"""The storage facade: the one place that opens Optuna's storage and knows its insides.

Everything here and in ``rdb``/``queue`` is written against Optuna 5.1 (``tests/study/
test_storage.py`` pins the version, so an upgrade is a deliberate act): the other packages use
Optuna's public API or this layer.

- :func:`open_storage` builds the one ``RDBStorage`` a process uses (every ``Study`` object holds a
  connection pool, DESIGN.md section 5): our engine settings (``pool_pre_ping`` and a bounded pool
  for PostgreSQL) and, for a worker, Optuna's heartbeat, passed at construction
  (``heartbeat_interval``/``grace_period`` and ``RetryHeartbeatStaleTrialCallback``, the 4.9+
  name of ``RetryFailedTrialCallback``, which re-queues a dead worker's trial); every call it
  makes survives a database restart (``rdb.ResilientStorage``).
- ``rdb.storage_error`` is the one translation of a database error into a ``StorageError``: what
  was being done, the URL and the driver's first line, the password masked.
- :func:`study_names` lists studies without creating Optuna's tables; :func:`open_study` opens one;
  :func:`heartbeat_ages` reads Optuna's heartbeat table; :func:`engine_of` is the SQLAlchemy
  engine behind a study (the latency cache shares it: one pool per process).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.exceptions import StorageInternalError
from sqlalchemy import DateTime, Integer, String, cast, column, func, inspect, select, table, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import SQLAlchemyError

from rs_search.errors import StorageError
from rs_search.storage.engine import make_engine
from rs_search.storage.locks import advisory_lock
from rs_search.storage.url import mask_url, resolve_storage_url
from rs_search.study.rdb import DEFAULT_RETRY_SECONDS, Heartbeat, ResilientStorage, storage_error

if TYPE_CHECKING:
    from sqlalchemy import Engine

__all__ = [
    "Heartbeat",
    "OpenStudy",
    "ResilientStorage",
    "engine_of",
    "heartbeat_ages",
    "open_existing_storage",
    "open_storage",
    "open_study",
    "require_study",
    "stored_study_attrs",
    "study_names",
    "unknown_study_message",
]


def open_storage(
    storage: str | URL | None,
    *,
    heartbeat: Heartbeat | None = None,
    retry_seconds: float | None = None,
) -> ResilientStorage:
    """The process's storage (see the module docstring). ``heartbeat``: a worker's (None for
    readers); ``retry_seconds``: how long a call keeps retrying while the database is unreachable
    (``Environment.storage_retry_s``; default two minutes). Raises ``StorageError`` (password
    masked) when the database cannot be opened."""
    url = storage if isinstance(storage, URL) else resolve_storage_url(storage)
    probe = make_engine(url)  # one clear line when the server is down
    try:
        created = inspect(probe).has_table("alembic_version")  # Optuna stamps after creating
    except SQLAlchemyError as exc:
        raise storage_error(exc, url, "open study storage") from None
    finally:
        probe.dispose()
    # Optuna creates its tables on first use; two processes doing so at once on PostgreSQL collide
    # in the catalogue (UniqueViolation on pg_type, seen in tests/reliability), so the first use
    # of a database is serialised.
    guard = nullcontext() if created else advisory_lock(url, "optuna-tables")
    try:
        with guard:
            return ResilientStorage(
                url,
                heartbeat=heartbeat,
                retry_seconds=DEFAULT_RETRY_SECONDS if retry_seconds is None else retry_seconds,
            )
    except (SQLAlchemyError, StorageInternalError, RuntimeError) as exc:
        raise storage_error(exc, url, "open study storage") from None


def open_existing_storage(
    storage: str | URL | None, *, retry_seconds: float | None = None
) -> ResilientStorage:
    """:func:`open_storage` for a reader of every study there (optuna-dashboard): a SQLite file
    that does not exist is an error, not a new empty database."""
    url = storage if isinstance(storage, URL) else resolve_storage_url(storage)
    if sqlite_file_missing(url):
        raise StorageError(f"no study storage at {mask_url(url)}: the SQLite file does not exist")
    return open_storage(url, retry_seconds=retry_seconds)


# -- looking studies up ------------------------------------------------------------------------


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
        raise storage_error(exc, url, "read studies from") from None
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


def require_study(name: str, storage: str | URL | None) -> URL:
    """The resolved URL of ``storage`` when it holds study ``name``; else a ``StorageError``
    listing the studies there (nothing is created on the way)."""
    url = storage if isinstance(storage, URL) else resolve_storage_url(storage)
    names = study_names(url)
    if name not in names:
        raise StorageError(unknown_study_message(name, names, url))
    return url


@dataclass(frozen=True)
class OpenStudy:
    study: optuna.Study
    storage: ResilientStorage
    url: URL
    study_id: int

    def close(self) -> None:
        """Return the pool's connections (the process may go on to open another storage)."""
        self.storage.engine.dispose()


def open_study(
    name: str,
    storage: str | URL | None,
    *,
    heartbeat: Heartbeat | None = None,
    retry_seconds: float | None = None,
    study_class: type[optuna.Study] = optuna.Study,
    sampler: optuna.samplers.BaseSampler | None = None,
) -> OpenStudy:
    """Open study ``name`` in ``storage`` (flag, ``$RS_SEARCH_STORAGE`` or the default file).

    An unreachable database or an unknown study is a ``StorageError`` listing the studies that
    exist; nothing is created on the way (no tables, no SQLite file)."""
    url = require_study(name, storage)
    rdb = open_storage(url, heartbeat=heartbeat, retry_seconds=retry_seconds)
    study = study_class(study_name=name, storage=rdb, sampler=sampler)
    return OpenStudy(study=study, storage=rdb, url=url, study_id=rdb.get_study_id_from_name(name))


def stored_study_attrs(
    name: str, storage: str | URL | None, *, retry_seconds: float | None = None
) -> dict[str, Any]:
    """Study ``name``'s user attributes, read through a storage that is closed again at once (a
    worker needs its study's heartbeat settings before it opens its own storage with them)."""
    opened = open_study(name, storage, retry_seconds=retry_seconds)
    try:
        return dict(opened.study.user_attrs)
    finally:
        opened.close()


def engine_of(study: optuna.Study) -> Engine | None:
    """The SQLAlchemy engine behind ``study``'s storage (Optuna wraps it in a cache), or None
    for a storage without one (an in-memory study: no latency cache)."""
    storage = getattr(study._storage, "_backend", study._storage)
    return getattr(storage, "engine", None)


# -- Optuna's heartbeat table --------------------------------------------------------------------

_trials = table(
    "trials",
    column("trial_id", Integer),
    column("study_id", Integer),
    column("number", Integer),
    column("state", String),
)
_heartbeats = table("trial_heartbeats", column("trial_id", Integer), column("heartbeat", DateTime))


def heartbeat_ages(engine: Engine, study_id: int) -> dict[int, float]:
    """Trial number -> seconds since its last heartbeat, for the study's RUNNING trials. Ages are
    measured with the database's own clock, as Optuna does, so the machines' clocks do not
    matter."""
    query = (
        select(_trials.c.number, _heartbeats.c.heartbeat)
        .select_from(_heartbeats.join(_trials, _trials.c.trial_id == _heartbeats.c.trial_id))
        # The state is a PostgreSQL enum (``trialstate``) and a string on SQLite: compare as text.
        .where(_trials.c.study_id == study_id, cast(_trials.c.state, String) == "RUNNING")
    )
    with engine.connect() as conn:
        now = conn.execute(select(func.now())).scalar_one()
        rows = conn.execute(query).all()
    now = _naive(now)
    return {int(number): (now - _naive(beat)).total_seconds() for number, beat in rows}


def _naive(value: Any) -> datetime:
    # PostgreSQL's now() is timezone-aware while the column is not (Optuna strips it too).
    if isinstance(value, str):  # SQLite without type information
        value = datetime.fromisoformat(value)
    assert isinstance(value, datetime), value
    return value.replace(tzinfo=None)
