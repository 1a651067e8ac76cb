"""Replays on the shipped tiny-digits table (36 real candidates, 9 epochs on digits): the whole
comparison runs in CI in well under a minute (issue 11, "What it must show")."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from rs_search.bench.replay import Method, Run, TrialEvent, replay
from rs_search.bench.table import Table, load_table
from tests.bench.helpers import DATA

ROOT = Path(__file__).resolve().parents[2]
TABLE = load_table(DATA / "tiny-digits-9ep.jsonl")
BUDGET = TABLE.header.budget_epochs


def test_a_replay_is_a_function_of_the_table_the_method_and_the_seed() -> None:
    method = Method(name="tpe", sampler="tpe")
    a = replay(TABLE, method, seed=3, compute=8 * BUDGET)
    b = replay(TABLE, method, seed=3, compute=8 * BUDGET)
    c = replay(TABLE, method, seed=4, compute=8 * BUDGET)
    assert a.events == b.events
    assert [e.key for e in a.events] != [e.key for e in c.events]


def test_compute_is_the_epochs_trained_and_halving_buys_more_candidates_with_it() -> None:
    compute = 8 * BUDGET
    plain = replay(
        TABLE, Method(name="p", sampler="random", halving=False), seed=1, compute=compute
    )
    halved = replay(TABLE, Method(name="h", sampler="random"), seed=1, compute=compute)
    for run in (plain, halved):
        assert run.stopped == "compute spent" and compute <= run.spent < compute + BUDGET
        assert sum(e.epochs for e in run.events) == run.spent
        assert [e.spent for e in run.events] == sorted(e.spent for e in run.events)
        for e in run.events:
            trained = {"complete": BUDGET, "repeat": 0, "skipped": 0}.get(e.state)
            assert trained is None or e.epochs == trained, e
            assert (e.point is not None) == (e.state == "complete")
    assert all(e.state in ("complete", "repeat") for e in plain.events)
    assert halved.count("pruned") > 0
    assert all(e.epochs == e.decisions[-1][0] for e in halved.events if e.state == "pruned")
    trained = {e.key for e in halved.events if e.epochs}
    assert len(trained) > len({e.key for e in plain.events if e.epochs})
    # the true front's losses to the real (asynchronous) halving rule, from the runs themselves
    front = {e.key for e in plain.events if e.state == "complete"}
    assert plain.front_tried(front) == (0, len(front))
    pruned, tried = halved.front_tried(front | {e.key for e in halved.events})
    assert tried == len(trained) and pruned == len(
        {e.key for e in halved.events if e.state == "pruned"}
        - {e.key for e in halved.events if e.state == "complete"}
    )
    # the seeds train first and to the full budget, exempt from halving
    assert [e.origin for e in halved.events[:2]] == ["seed", "seed"]
    assert all(e.state == "complete" for e in halved.events[:2])


def test_candidates_outside_a_sampled_table_are_skipped_and_counted() -> None:
    half = Table(header=TABLE.header, entries=TABLE.entries[:18])
    run = replay(
        half, Method(name="r", sampler="random", halving=False), seed=2, compute=6 * BUDGET
    )
    keys = {e.key for e in half.entries}
    skipped = [e for e in run.events if e.state == "skipped"]
    assert skipped and all(e.key not in keys and e.epochs == 0 for e in skipped)
    assert all(e.key in keys for e in run.events if e.state == "complete")
    assert run.count("skipped") == len(skipped)


def _event(number: int, key: str, raw: str) -> TrialEvent:
    return TrialEvent(
        number=number, origin="sampler", state="complete", key=key, raw_key=raw,
        label="", epochs=1, flops=0.0, spent=number + 1,
    )  # fmt: skip


def test_repeats_and_no_effect_variants_are_counted() -> None:
    # a, a (exact repeat), a' (same run, another spelling), b, a' (exact repeat of a spelling)
    events = [_event(0, "A", "a"), _event(1, "A", "a"), _event(2, "A", "a2")]
    events += [_event(3, "B", "b"), _event(4, "A", "a2")]
    run = Run(method=Method(name="m"), seed=0, events=tuple(events), stopped="")
    assert run.exact_repeats == 2 and run.no_effect_variants == 1
    # on the table: rs-search samples inactive parameters conditionally, MO-ASHA cannot
    tpe = replay(TABLE, Method(name="t", sampler="random"), seed=0, compute=20 * BUDGET)
    moasha = replay(TABLE, Method(name="m", engine="syne-tune"), seed=0, compute=20 * BUDGET)
    assert tpe.no_effect_variants == 0 and moasha.no_effect_variants > 0
    assert tpe.exact_repeats == tpe.count("repeat") + tpe.count("skipped")
    assert moasha.exact_repeats > 0 and moasha.count("repeat") == 0  # it trains them again


def test_the_search_quality_benchmark_runs_every_method_on_the_table(tmp_path: Path) -> None:
    out = tmp_path / "sq.html"
    proc = subprocess.run(
        [
            sys.executable, str(ROOT / "benchmarks" / "search_quality.py"),
            "--table", str(DATA / "tiny-digits-9ep.jsonl"), "--seeds", "2",
            "--compute-trials", "6", "--out", str(out),
        ],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ")][1:]
    names = [r.split("|")[1].strip() for r in rows]
    assert names == [
        "rs-search default", "tpe, halving", "tpe, no halving", "nsga2, halving",
        "nsga2, no halving", "random, halving", "random, no halving", "gp, no halving",
        "MO-ASHA (Syne Tune)",
    ]  # fmt: skip
    for row in rows:
        medians = [float(cell.split()[0]) for cell in row.split("|")[2:6]]
        assert all(0 <= m <= 1 for m in medians) and medians == sorted(medians), row
    assert "rs-search default at 50% of the compute" in proc.stdout
    assert "epoch   3: tau" in proc.stdout and "true-front candidates" in proc.stdout
    page = out.read_text()
    assert "plotly" in page and "Hypervolume vs compute" in page


def test_a_replay_through_the_study_layers_rdb_storage_equals_the_in_memory_one(
    tmp_path: Path,
) -> None:
    # the worker's own path (create_or_resume, join_study, SQLite) against the fast default
    method = Method(name="tpe", sampler="tpe")
    memory = replay(TABLE, method, seed=7, compute=4 * BUDGET)
    sqlite = replay(TABLE, method, seed=7, compute=4 * BUDGET, storage=f"sqlite:///{tmp_path}/r.db")
    assert sqlite.events == memory.events and (tmp_path / "r.db").exists()
