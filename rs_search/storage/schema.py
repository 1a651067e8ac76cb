"""Schema versions of a study database: Optuna's tables and ours, checked and upgraded.

Two independent alembic histories share the database:

- Optuna's, in ``alembic_version``: upgraded by Optuna's own code (``RDBStorage.upgrade``, what
  ``optuna storage upgrade`` runs). Optuna creates and stamps its tables on first use itself.
- ours (``rs_search/storage/migrations``), in ``rs_search_alembic_version``.

How first use and migrations coexist (``ensure_tables``, called wherever our tables are used):
a database with none of our tables gets them from ``metadata.create_all`` and is stamped with our
head revision in the same transaction, so users who never run ``rs-search db upgrade`` keep
working as before. A database with our tables but no revision (made by an rs-search older than
the migrations) is stamped with the baseline revision, whose schema is exactly what those versions
created. A database whose revision is behind ours is refused with one line that says to run
``rs-search db upgrade``: a worker never alters tables on its own (under the roles of db/init.sql
it may not), and two workers of different versions never race a migration.

Every schema change runs under one lock: a PostgreSQL transaction-scoped advisory lock, or
SQLite's write lock taken at ``BEGIN IMMEDIATE``.
"""

from __future__ import annotations

import functools
import logging
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import Connection, Engine, create_engine, event, func, inspect, select
from sqlalchemy.engine import URL
from sqlalchemy.exc import SQLAlchemyError

from rs_search.errors import StorageError
from rs_search.storage.engine import engine_kwargs, make_engine
from rs_search.storage.tables import metadata
from rs_search.storage.url import mask_url, resolve_storage_url

VERSION_TABLE = "rs_search_alembic_version"
BASELINE = "rs_0001"  # the schema rs-search created before it had migrations
MIGRATIONS = Path(__file__).with_name("migrations")
OPTUNA_VERSION_TABLE = "alembic_version"  # Optuna's alembic default; Optuna owns it

_LOCK_ID = zlib.crc32(b"rs_search.storage.tables") & 0x7FFFFFFF

State = Literal["current", "behind", "missing", "ahead"]


@dataclass(frozen=True, kw_only=True)
class SchemaVersion:
    """One history's revision in a database against the head this installation knows."""

    name: str  # "optuna" | "rs-search"
    current: str | None  # None: never created (or, for ours, created before migrations)
    head: str
    state: State

    def line(self) -> str:
        shown = self.current or "none"
        what = {
            "current": "current",
            "behind": "behind: run rs-search db upgrade",
            "missing": "not created yet: run rs-search db upgrade (or start a study)",
            "ahead": "written by a newer version: upgrade this installation",
        }[self.state]
        return f"{self.name} schema: {shown} (head {self.head}): {what}"


def _state(current: str | None, head: str, known: Sequence[str]) -> State:
    if current == head:
        return "current"
    if current is None:
        return "missing"
    return "behind" if current in known else "ahead"


# --- our history ---------------------------------------------------------------------------


def is_ours(name: str | None, type_: str, parent_names: Any) -> bool:
    """alembic's ``include_name`` filter: only ``rs_`` tables (Optuna's share the database)."""
    return type_ != "table" or (name is not None and name.startswith("rs_"))


def _script() -> Any:
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(MIGRATIONS))


@functools.cache
def head_revision() -> str:
    head = _script().get_current_head()
    assert head is not None, "rs-search migrations have exactly one head"
    return str(head)


@functools.cache
def _known_revisions() -> tuple[str, ...]:
    return tuple(str(r.revision) for r in _script().walk_revisions())


def _our_revision(conn: Connection) -> str | None:
    from alembic.migration import MigrationContext

    context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
    return context.get_current_revision()  # None when the table is missing or empty


def _has_our_tables(conn: Connection) -> bool:
    names = inspect(conn).get_table_names()
    return any(n.startswith("rs_") and n != VERSION_TABLE for n in names)


def _stamp(conn: Connection, revision: str) -> None:
    from alembic.migration import MigrationContext

    context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
    context.stamp(_script(), revision)


def _migrate(conn: Connection) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = conn
    logging.getLogger("alembic").setLevel(logging.WARNING)
    command.upgrade(config, "head")


@contextmanager
def _locked(url: URL, engine: Engine | None = None) -> Iterator[Connection]:
    """One transaction that holds the schema lock (see the module docstring), on ``engine`` if
    given (a SQLite file gets its own engine, to begin with the write lock)."""
    sqlite_file = url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:")
    own = engine is None or sqlite_file
    if sqlite_file:
        # pysqlite would run DDL outside any transaction; take the write lock up front instead.
        engine = create_engine(url, **engine_kwargs(url))

        @event.listens_for(engine, "connect")
        def _no_implicit_begin(dbapi_conn: Any, record: Any) -> None:
            dbapi_conn.isolation_level = None

        @event.listens_for(engine, "begin")
        def _begin_immediate(conn: Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    elif engine is None:
        engine = make_engine(url, check=False)
    try:
        with engine.begin() as conn:
            if url.get_backend_name() == "postgresql":
                conn.execute(select(func.pg_advisory_xact_lock(_LOCK_ID)))
            yield conn
    finally:
        if own:
            engine.dispose()


def _our_version(conn: Connection) -> SchemaVersion:
    current = _our_revision(conn)
    if current is None and _has_our_tables(conn):
        state: State = "behind"  # made before migrations: stamped with the baseline on upgrade
    else:
        state = _state(current, head_revision(), _known_revisions())
    return SchemaVersion(name="rs-search", current=current, head=head_revision(), state=state)


def ensure_tables(engine: Engine) -> None:
    """First use: create our tables (and stamp the head) when there are none; stamp a database
    made before migrations; refuse a database whose revision differs from ours (see the module
    docstring). Idempotent and safe when several workers start at once."""
    head = head_revision()
    try:
        with engine.connect() as conn:
            if _our_revision(conn) == head:
                return
        with _locked(engine.url, engine) as conn:
            current = _our_revision(conn)
            if current is None and _has_our_tables(conn):
                _stamp(conn, BASELINE)
                current = BASELINE
            elif current is None:
                metadata.create_all(conn, checkfirst=True)
                _stamp(conn, head)
                current = head
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
        # "permission denied for schema public": a worker role on a database nobody upgraded
        hint = " (run rs-search db upgrade as the database owner)" if "ermission" in reason else ""
        raise StorageError(
            f"cannot create rs-search tables in {mask_url(engine.url)}: {reason}{hint}"
        ) from None
    if current != head:
        version = SchemaVersion(
            name="rs-search",
            current=current,
            head=head,
            state=_state(current, head, _known_revisions()),
        )
        raise StorageError(f"{mask_url(engine.url)}: {version.line()}")


# --- Optuna's history ----------------------------------------------------------------------


def _optuna_versions() -> tuple[str, list[str]]:
    """Optuna's head revision and all it knows, through its public RDBStorage methods (on an
    in-memory database, so the real one is only read)."""
    from optuna.storages import RDBStorage

    probe = RDBStorage("sqlite:///:memory:")
    try:
        return probe.get_head_version(), probe.get_all_versions()
    finally:
        probe.engine.dispose()


def _optuna_version(conn: Connection) -> SchemaVersion:
    from alembic.migration import MigrationContext

    head, known = _optuna_versions()
    current = MigrationContext.configure(conn).get_current_revision()
    if current is None and inspect(conn).has_table("studies"):
        state: State = "behind"  # made before Optuna used alembic; its upgrade stamps it
    else:
        state = _state(current, head, known)
    return SchemaVersion(name="optuna", current=current, head=head, state=state)


def _upgrade_optuna(url: URL) -> None:
    import optuna
    from optuna.storages import RDBStorage

    probe = make_engine(url, check=False)
    try:
        with probe.connect() as conn:
            exists = inspect(conn).has_table("studies")
    finally:
        probe.dispose()
    raw = url.render_as_string(hide_password=False)
    kwargs = engine_kwargs(url)
    root = logging.getLogger()
    quiet = logging.NullHandler()
    if not root.handlers:
        # Optuna's alembic env.py loads its logging file config (INFO lines on stderr) when the
        # root logger has no handler.
        root.addHandler(quiet)
    try:
        if not exists:
            storage = RDBStorage(raw, engine_kwargs=kwargs)  # creates and stamps the head
        else:
            storage = RDBStorage(
                raw, engine_kwargs=kwargs, skip_compatibility_check=True, skip_table_creation=True
            )
            current = storage.get_current_version()
            if current not in storage.get_all_versions():
                raise StorageError(
                    f"{mask_url(url)}: Optuna schema {current} is newer than optuna "
                    f"{optuna.__version__} knows; upgrade optuna"
                )
            if current != storage.get_head_version():
                storage.upgrade()
        storage.engine.dispose()
    finally:
        root.removeHandler(quiet)


# --- the two commands ----------------------------------------------------------------------


def check(storage: str | URL | None) -> tuple[SchemaVersion, SchemaVersion]:
    """Optuna's and our schema versions; reads only (a missing SQLite file is an error)."""
    url = _url(storage, create=False)
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return _optuna_version(conn), _our_version(conn)
    except SQLAlchemyError as exc:
        raise _error("cannot read the schema version of", url, exc) from None
    finally:
        engine.dispose()


def upgrade(storage: str | URL | None) -> list[tuple[str | None, SchemaVersion]]:
    """Bring Optuna's schema and ours to the heads this installation knows; idempotent (a
    current schema is left as is). Returns, per history, the revision before and the version
    after."""
    url = _url(storage, create=True)
    make_engine(url).dispose()  # unreachable: one clear line, nothing attempted
    before = [v.current for v in check(url)] if _url_exists(url) else [None, None]
    try:
        _upgrade_optuna(url)
        with _locked(url) as conn:
            ours = _our_version(conn)
            if ours.state == "ahead":
                raise StorageError(f"{mask_url(url)}: {ours.line()}")
            if ours.current is None and _has_our_tables(conn):
                _stamp(conn, BASELINE)
            _migrate(conn)
    except (SQLAlchemyError, RuntimeError) as exc:
        raise _error("cannot upgrade", url, exc) from None
    return list(zip(before, check(url), strict=True))


def _url_exists(url: URL) -> bool:
    """False only for a SQLite file that does not exist (connecting would create it)."""
    database = url.database
    if url.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return True
    return Path(database).exists()


def _url(storage: str | URL | None, *, create: bool) -> URL:
    url = storage if isinstance(storage, URL) else resolve_storage_url(storage)
    if not create and not _url_exists(url):
        raise StorageError(f"no study database at {mask_url(url)}: the SQLite file does not exist")
    return url


def _error(what: str, url: URL, exc: BaseException) -> StorageError:
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    text = reason[0] if reason else type(exc).__name__
    if url.password:
        text = text.replace(str(url.password), "***")
    return StorageError(f"{what} {mask_url(url)}: {text}")
