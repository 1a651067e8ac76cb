"""db/init.sql on a private PostgreSQL cluster: the owner upgrades the schema, the worker runs a
study and our latency cache, and neither may create databases or roles."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

from rs_search.cli.main import main
from rs_search.errors import StorageError
from rs_search.latency.cache import LatencyCache
from rs_search.storage import schema
from rs_search.study.storage import Heartbeat, open_storage
from tests.deploy.pgcluster import Cluster, private_cluster
from tests.latency.conftest import T1, tiny

pytestmark = pytest.mark.slow

INIT_SQL = Path(__file__).resolve().parents[2] / "db" / "init.sql"
OWNER_PW = "owner-pw-0123456789"
WORKER_PW = "worker-pw-0123456789"
PASSWORDS = {"RS_OWNER_PASSWORD": OWNER_PW, "RS_WORKER_PASSWORD": WORKER_PW}


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with private_cluster() as c:
        c.psql("postgres", "-c", "CREATE DATABASE rs_search")
        yield c


def _sql(url: str, statement: str) -> None:
    engine = create_engine(url, isolation_level="AUTOCOMMIT")  # CREATE DATABASE needs it
    try:
        with engine.connect() as conn:
            conn.execute(text(statement))
    finally:
        engine.dispose()


def test_init_sql_refuses_missing_passwords_and_creates_nothing(cluster: Cluster) -> None:
    cluster.psql("postgres", "-c", "CREATE DATABASE rs_nopw")
    done = cluster.psql(
        "rs_nopw",
        "-f",
        str(INIT_SQL),
        env={"RS_OWNER_PASSWORD": "", "RS_WORKER_PASSWORD": ""},
        check=False,
    )
    assert done.returncode != 0
    assert "set RS_OWNER_PASSWORD" in done.stderr
    roles = cluster.psql(
        "postgres", "-tAc", "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'rs_%'"
    )
    assert roles.stdout.strip() == "0"


def test_roles_can_do_their_jobs_and_nothing_more(
    cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    for _ in range(2):  # running it again is safe
        cluster.psql("rs_search", "-f", str(INIT_SQL), env=PASSWORDS)
    owner = cluster.url("rs_owner", OWNER_PW, "rs_search")
    worker = cluster.url("rs_worker", WORKER_PW, "rs_search")

    # Neither role is privileged.
    flags = cluster.psql(
        "postgres",
        "-tAc",
        "SELECT rolname, rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls "
        "FROM pg_roles WHERE rolname LIKE 'rs_%' ORDER BY rolname",
    )
    assert flags.stdout.split() == ["rs_owner|f|f|f|f|f", "rs_worker|f|f|f|f|f"]

    # The worker cannot create the tables: first use says to run the upgrade as the owner.
    with pytest.raises(StorageError, match="run rs-search db upgrade as the database owner"):
        LatencyCache(worker)

    # The owner upgrades (creates Optuna's tables and ours).
    main(["db", "upgrade", "--storage", owner])  # returns on success, exits on failure
    assert "rs-search schema: none -> " in capsys.readouterr().out

    # The worker runs a small study with heartbeats, attributes and the latency cache.
    storage = open_storage(worker, heartbeat=Heartbeat(interval=1, grace=3))
    study = optuna.create_study(
        study_name="roles", storage=storage, directions=["maximize", "minimize"]
    )
    study.set_user_attr("settings", {"budget": 1})

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        x = trial.suggest_float("x", 0, 1)
        trial.set_user_attr("curve", [{"epoch": 1, "val_top1": x}])
        return x, 1 - x

    study.optimize(objective, n_trials=3)
    study.enqueue_trial({"x": 0.5}, skip_if_exists=True)
    assert len(study.trials) == 4
    storage.engine.dispose()
    with LatencyCache(worker) as cache:
        claim = cache.try_claim(tiny(), T1, "worker-a")
        assert claim is not None
        cache.release(claim)  # a claim given back is a DELETE
        assert cache.get(tiny(), T1) is None
    assert schema.check(worker)[1].state == "current"

    # ... and nothing more.
    denied = {
        "CREATE DATABASE rs_other": "permission denied to create database",
        "CREATE ROLE rs_other": "permission denied to create role",
        "CREATE TABLE rs_mine (i int)": "permission denied for schema public",
        "DROP TABLE trials": "must be owner",
        "ALTER TABLE rs_latency ADD COLUMN x int": "must be owner",
    }
    for statement, reason in denied.items():
        with pytest.raises(DBAPIError, match=reason):
            _sql(worker, statement)
    for statement in ("CREATE DATABASE rs_other", "CREATE ROLE rs_other"):
        with pytest.raises(DBAPIError, match="permission denied"):
            _sql(owner, statement)

    # A table the owner adds later (a future migration) is the worker's to use at once.
    _sql(owner, "CREATE TABLE rs_later (id serial PRIMARY KEY, note text)")
    _sql(worker, "INSERT INTO rs_later (note) VALUES ('default privileges')")
