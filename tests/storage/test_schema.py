"""Schema versions: ``rs-search db upgrade`` / ``db check`` and first use of our tables.

On SQLite (a file) and on the real PostgreSQL server (``postgres_url``). Optuna's schema is made
"behind" for real, with Optuna's own alembic downgrade; ours by dropping our version table, which
leaves exactly what an rs-search without migrations created.
"""

from __future__ import annotations

import threading
from pathlib import Path

import optuna
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from rs_search.cli.main import main
from rs_search.errors import StorageError
from rs_search.latency.cache import LatencyCache, local_key
from rs_search.latency.result import LatencyResult
from rs_search.storage import schema
from rs_search.storage.tables import metadata
from tests.latency.conftest import T1, tiny


@pytest.fixture(params=["sqlite", "postgresql"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'study.db'}"
    return str(request.getfixturevalue("postgres_url"))


def _sql(storage: str, statement: str) -> None:
    engine = create_engine(storage.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.begin() as conn:
            conn.execute(text(statement))
    finally:
        engine.dispose()


def _put_latency(storage: str) -> LatencyResult:
    arch = tiny()
    key = local_key(arch, T1)
    result = LatencyResult(
        arch_key=arch.key(),
        profile_name=T1.name,
        profile_key=T1.key(),
        device_name=key.device_name,
        torch_version=key.torch_version,
        status="ok",
        median_ms=1.25,
        p90_ms=1.5,
        spread=0.01,
        stable=True,
    )
    with LatencyCache(storage) as cache:
        cache.put(arch, T1, result)
    return result


def _latency(storage: str) -> LatencyResult | None:
    with LatencyCache(storage) as cache:
        return cache.get(tiny(), T1)


def _as_made_by_optuna_3_0(storage: str) -> None:
    """Optuna's tables as Optuna 3.0 left them: revision v3.0.0.d, before v3.2.0.a indexed
    ``trials.study_id`` (Optuna's own downgrade script names an index fresh tables lack)."""
    engine = create_engine(storage.replace("postgresql://", "postgresql+psycopg://"))
    try:
        indexes = [
            i["name"]
            for i in inspect(engine).get_indexes("trials")
            if i["column_names"] == ["study_id"]
        ]
        with engine.begin() as conn:
            for name in indexes:
                conn.execute(text(f"DROP INDEX {name}"))
            conn.execute(text("UPDATE alembic_version SET version_num = 'v3.0.0.d'"))
    finally:
        engine.dispose()


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(list(args))
        raise SystemExit(0)
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err


def test_upgrade_brings_both_schemas_to_head_keeps_data_and_is_idempotent(
    storage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    written = _put_latency(storage)  # first use: our tables, stamped
    study = optuna.create_study(study_name="s", storage=storage, directions=["maximize"])
    study.add_trial(optuna.trial.create_trial(value=0.5, params={}, distributions={}))
    del study
    _as_made_by_optuna_3_0(storage)
    _sql(storage, f"DROP TABLE {schema.VERSION_TABLE}")  # as made before our migrations

    code, out, _ = _cli(capsys, "db", "check", "--storage", storage)
    assert code == 1
    assert out.splitlines() == [
        "optuna schema: v3.0.0.d (head v3.2.0.a): behind: run rs-search db upgrade",
        f"rs-search schema: none (head {schema.head_revision()}): behind: run rs-search db upgrade",
    ]

    code, out, err = _cli(capsys, "db", "upgrade", "--storage", storage)
    assert code == 0, err
    assert out.splitlines() == [
        "optuna schema: v3.0.0.d -> v3.2.0.a (upgraded)",
        f"rs-search schema: none -> {schema.head_revision()} (upgraded)",
    ]
    code, out, err = _cli(capsys, "db", "upgrade", "--storage", storage)
    assert code == 0, err
    assert out.splitlines() == [
        "optuna schema: v3.2.0.a (already current)",
        f"rs-search schema: {schema.head_revision()} (already current)",
    ]
    code, out, _ = _cli(capsys, "db", "check", "--storage", storage)
    assert code == 0 and out.count(": current") == 2, out

    assert _latency(storage) == written
    assert optuna.load_study(study_name="s", storage=storage).trials[0].value == 0.5
    engine = create_engine(storage.replace("postgresql://", "postgresql+psycopg://"))
    try:
        tables = set(inspect(engine).get_table_names())
        with engine.connect() as conn:
            versions = conn.execute(text(f"SELECT version_num FROM {schema.VERSION_TABLE}"))
            assert [r[0] for r in versions] == [schema.head_revision()]
    finally:
        engine.dispose()
    assert {t.name for t in metadata.sorted_tables} <= tables
    assert "alembic_version" in tables  # Optuna's own history, beside ours


def test_upgrade_creates_everything_on_a_new_database(storage: str) -> None:
    changes = schema.upgrade(storage)
    assert [(was, now.state) for was, now in changes] == [(None, "current"), (None, "current")]
    optuna.create_study(study_name="new", storage=storage)  # Optuna accepts the schema as is
    assert _latency(storage) is None


def test_first_use_creates_our_tables_at_head(storage: str) -> None:
    written = _put_latency(storage)
    optuna_version, ours = schema.check(storage)
    assert ours.state == "current" and ours.current == schema.head_revision()
    assert optuna_version.state == "missing"  # nothing made Optuna's tables yet
    assert _latency(storage) == written


def test_first_use_stamps_a_database_made_before_migrations(storage: str) -> None:
    written = _put_latency(storage)
    _sql(storage, f"DROP TABLE {schema.VERSION_TABLE}")
    assert schema.check(storage)[1].state == "behind"
    assert _latency(storage) == written  # first use stamped the baseline and went on
    assert schema.check(storage)[1].current == schema.BASELINE


def test_a_revision_this_installation_does_not_know_is_refused(
    storage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _put_latency(storage)
    _sql(storage, f"UPDATE {schema.VERSION_TABLE} SET version_num = 'rs_9999'")
    with pytest.raises(StorageError, match="rs_9999 .*newer version"):
        LatencyCache(storage)
    code, out, _ = _cli(capsys, "db", "check", "--storage", storage)
    assert code == 1 and "rs-search schema: rs_9999" in out
    code, _, err = _cli(capsys, "db", "upgrade", "--storage", storage)
    assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1


def test_migrations_build_exactly_the_tables_of_tables_py(storage: str) -> None:
    """Fails when tables.py changes without a migration (or a migration without tables.py)."""
    schema.upgrade(storage)
    engine = create_engine(storage.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn,
                opts={
                    "include_name": schema.is_ours,
                    "version_table": schema.VERSION_TABLE,
                    "compare_type": True,
                },
            )
            diff = compare_metadata(context, metadata)
    finally:
        engine.dispose()
    assert diff == []


def test_concurrent_first_use_creates_once(storage: str) -> None:
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def first_use() -> None:
        try:
            start.wait()
            LatencyCache(storage).close()
        except BaseException as exc:  # collected: the assertion below shows it
            errors.append(exc)

    threads = [threading.Thread(target=first_use) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert schema.check(storage)[1].state == "current"


def test_check_of_a_missing_sqlite_file_is_one_line_and_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _cli(capsys, "db", "check", "--storage", f"sqlite:///{tmp_path / 'no.db'}")
    assert code == 2 and err.startswith("error: no study database at")
    assert list(tmp_path.iterdir()) == []


def test_unreachable_server_is_one_line_without_the_password(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for verb in ("upgrade", "check"):
        code, _, err = _cli(
            capsys, "db", verb, "--storage", "postgresql://alice:s3cr3t-pw@127.0.0.1:1/s"
        )
        assert code == 2 and err.startswith("error: cannot reach storage"), err
        assert "s3cr3t" not in err
