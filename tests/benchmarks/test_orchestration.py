"""``benchmarks/orchestration.py``: its ``--quick`` mode run for real (worker processes against a
real PostgreSQL server and a SQLite file), the structure and consistency of what it writes, and
the pure functions its figures come from."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import text

from tests.conftest import postgres_server_url

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "orchestration.py"
sys.path.insert(0, str(ROOT / "benchmarks"))

from orchcost import figures  # noqa: E402
from orchcost.common import TABLE, bench_space  # noqa: E402


def test_saturation_is_where_the_rate_stops_rising() -> None:
    assert figures.saturation({1: 10.0, 4: 30.0, 8: 32.0, 16: 31.0}) == 4
    assert figures.saturation({1: 10.0, 4: 30.0, 8: 60.0, 16: 90.0}) is None
    assert figures.saturation({1: 10.0, 4: 9.0}) == 1
    # a gain just under the threshold is no longer rising
    assert figures.saturation({1: 10.0, 2: 10.0 * figures.SATURATION_GAIN - 0.01}) == 1


def test_percentile_matches_numpy() -> None:
    values = [5.0, 1.0, 9.0, 3.0, 7.0, 2.0, 100.0]
    for q in (0, 50, 90, 99, 100):
        assert figures.percentile(values, q) == pytest.approx(np.percentile(values, q))
    assert math.isnan(figures.percentile([], 50))


def test_bench_space_adds_a_learning_rate_range_around_the_tables() -> None:
    from rs_search.bench.table import load_table

    table = load_table(TABLE)
    space = bench_space(table)
    domain = space.param("recipe.lr_per_256").domain
    assert domain.contains(0.8) and domain.contains(0.41) and domain.contains(1.59)
    assert not domain.contains(0.39) and not domain.contains(1.61)
    assert len(space.seeds) == len(table.header.space.seeds) == 2


def _rs_orch_databases(server: str) -> set[str]:
    from rs_search.storage.engine import make_engine

    engine = make_engine(server)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT datname FROM pg_database WHERE datname LIKE 'rs_orch_%'")
            )
            return {r[0] for r in rows}
    finally:
        engine.dispose()


@pytest.mark.slow
@pytest.mark.postgres
def test_quick_run_writes_consistent_figures(tmp_path: Path) -> None:
    from rs_search.errors import StorageError

    server = postgres_server_url()
    try:
        before = _rs_orch_databases(server)
    except StorageError as exc:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"PostgreSQL is required in CI: {exc}")
        pytest.skip(f"no PostgreSQL server: {exc}")
    out = tmp_path / "quick.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--server", server, "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report: dict[str, Any] = json.loads(out.read_text())

    assert report["settings"]["quick"] is True
    assert report["settings"]["workers"] == [1, 2]
    assert report["machine"]["cores"] >= 1 and report["machine"]["cpu"]
    runs = report["runs"]
    keys = {(r["backend"], r["workers"], r["engine"]) for r in runs}
    assert keys == {
        (b, w, e) for b in ("postgresql", "sqlite") for w in (1, 2) for e in ("optuna", "rs-search")
    }
    per = report["settings"]["trials_per_worker"]
    for r in runs:
        where = (r["backend"], r["workers"], r["engine"])
        budget = r["workers"] * per
        assert r["errors"] == [], where
        assert r["trials_budget"] == r["trials_finished"] == budget, where
        # every trial finished (halving may prune some); none left waiting or running
        assert set(r["states"]) <= {"COMPLETE", "PRUNED"}, (where, r["states"])
        assert sum(r["states"].values()) == budget, where
        assert 0 < r["makespan_s"] < 600 and r["trials_per_s"] > 0, where
        assert r["trials_per_s"] == pytest.approx(budget / r["makespan_s"]), where
        overhead = r["overhead_ms"]
        # one overhead figure per pair of consecutive trials in a worker
        if r["engine"] == "optuna":
            assert overhead["n"] == budget - r["workers"], where
        else:  # the queue hands trials to whichever worker asks first
            assert budget - r["workers"] <= overhead["n"] <= budget - 1, where
        assert 0 < overhead["p50"] <= overhead["p99"], where
        assert r["answer_ms_p50"] >= 0, where
        parts = r["per_trial_p50"]
        assert parts["sql_statements"] > 0 and parts["sql_ms"] > 0, where
        assert parts["sampler_ms"] > 0 and parts["cpu_ms"] > 0, where
        cpu = r["cpu"]
        assert cpu["workers_share"] > 0 and cpu["machine_busy"] > 0, where
        assert cpu["others_share"] >= 0, where
    if any(r["backend"] == "postgresql" for r in runs):
        # the server's processes worked during the PostgreSQL runs
        assert max(r["cpu"]["postgres_share"] for r in runs if r["backend"] == "postgresql") > 0

    rates = {(r["backend"], r["workers"], r["engine"]): r["trials_per_s"] for r in runs}
    for backend, summary in report["comparison"].items():
        for workers in (1, 2):
            ratio = summary["ratio"][str(workers)]
            expected = rates[(backend, workers, "rs-search")] / rates[(backend, workers, "optuna")]
            assert ratio == pytest.approx(expected)
        for engine in ("optuna", "rs-search"):
            assert summary["saturation"][engine] in (1, None)
            assert summary["peak"][engine] in (1, 2)
        top = summary["at_largest"]
        assert top["workers"] == 2
        assert top["met"] == (top["ratio"] >= 0.8 and top["rs_p99_ms"] < 100)
    # the storage-call breakdown: one worker per engine on the first storage
    profiles = report["storage_calls"]
    assert [(p["engine"], p["backend"]) for p in profiles] == [
        ("optuna", "postgresql"),
        ("rs-search", "postgresql"),
    ]
    for p in profiles:
        assert p["trials"] >= 2 and p["wall_ms_per_trial"] > 0, p["engine"]
        assert p["client_cpu_ms_per_trial"] > 0 and p["server_cpu_ms_per_trial"] > 0, p["engine"]
        assert p["sql_statements_per_trial"] > 0, p["engine"]
        assert p["calls"], p["engine"]
        # the storage calls are part of a trial's time, counted once (outermost call only)
        spent = sum(c["ms_per_trial"] for c in p["calls"].values())
        assert 0 < spent <= p["wall_ms_per_trial"], p["engine"]
    assert "set_trial_user_attr" in profiles[1]["calls"]  # the search records its trials
    assert "calls/trial" in proc.stdout
    assert "must-show" in proc.stdout and "postgresql" in proc.stdout
    # every database the run created was dropped again
    assert _rs_orch_databases(server) <= before
