"""What the orchestration costs: rs-search's worker path against plain Optuna, trials that train
nothing (issue 11 item 6; the figure db/README.md quotes for how many workers one server holds).

For each storage (a fresh PostgreSQL database on the server ``--server``, created under a unique
name and dropped afterwards; a SQLite file in a temporary folder) and each worker count (1, 4, 8,
16 processes), two searches over the same space, with the same sampler (TPE, multivariate,
constant liar, worker ``k`` seeded ``seed + k``: what ``rs-search start --seed`` gives its local
workers) and the same answered objective, ``workers x trials-per-worker`` trials in all:

- **rs-search**: the study is made as ``rs-search start`` makes it (``create_or_resume``, seeds
  and budget slots queued by ``enqueue_work``), the latency cache holds the table's figures (as a
  latency worker on the target would have left them), and every worker process runs
  ``rs_search.search.worker.run_worker``, the function ``rs-search worker`` runs: queue claim,
  stale-trial check, heartbeats, latency from the cache table, the trial's attributes, the curve
  written every epoch, Pareto-aware halving at the default rungs, repeat detection. Only the
  launcher is swapped (``make_launcher``): training is answered from a benchmark table.
- **plain Optuna**: ``optuna.load_study(storage=URL, sampler=...)`` and ``study.optimize(objective,
  n_trials=T)``; the objective samples the same parameters (``SearchSpace.sample``) and is
  answered from the same table (all epochs: Optuna cannot prune a multi-objective study). Its
  workers create their trials (no queue, no seeds): with enqueued trials on SQLite, plain Optuna's
  claim lets two workers take the same trial and one dies on "Cannot tell a COMPLETE trial"
  (measured here; rs-search's facade claims with one conditional UPDATE since).

**Answered from a table.** ``tests/bench/data/tiny-digits-9ep.jsonl`` holds the 9-epoch curves
of all 36 candidates of its space (``rs_search.bench.answer`` answers a candidate with its curve,
an architecture with its latency). In a 36-candidate space almost every trial of a few hundred
would be a repeat, which rs-search prunes without training (a shortcut, not the path of a real
trial), so the benchmark space is the table's with one continuous parameter added:
``lr_per_256`` becomes a log range around the table's value (x0.5..x2). Every trial is then a new
candidate, as in a real space with ranges; it is answered with the curve of the table's candidate
at the table's learning rate. Answering costs microseconds, so a trial's time is almost all
orchestration.

**What is measured.** Worker processes are forked once everything is imported, wait at a barrier,
then start together (process start-up is not a trial's cost). For each trial a worker notes when
the answered training began and how long the answering itself took (the search's per-epoch
callbacks excluded), with the SQL statements its engines ran (count, time in the driver: client
round trip plus server work and lock waits, SQLAlchemy ``cursor_execute`` events), the time in
the sampler, and its CPU time. Overhead per trial = the time from one trial's answering to the
next one's in the same worker, less the answering: everything the search does around a trial.

- trials/s: trials finished / (last trial's completion - the barrier), from the trials' stored
  completion times; the ratio is rs-search / plain Optuna at the same storage and worker count;
- p50/p99 overhead per trial (ms) over all workers' trials;
- saturation: the first worker count after which the next count raises the trial rate by less
  than 10 % (project heuristic threshold: below it, adding workers buys nothing measurable
  against run-to-run noise);
- where the time goes: the machine's CPU use during the run (``/proc/stat``) split into the
  workers' own CPU, the PostgreSQL server processes' CPU (``/proc/<pid>/stat`` of every process
  named ``postgres``: the whole local server, other users' sessions included) and everyone else.
  When the machine's CPUs are nearly all busy, the figure measures the CPUs, not the database.

    python benchmarks/orchestration.py --out orchestration.json           # the full run
    python benchmarks/orchestration.py --quick --out quick.json           # 1 and 2 workers

Last, ``--storage-calls N`` runs one worker per engine in this process for N trials and times
each storage call the search makes (how often per trial, how long), with the worker's and the
PostgreSQL server's CPU per trial: where the overhead goes.

The server URL comes from ``--server`` or ``$RS_SEARCH_TEST_POSTGRES`` (default: the local
trust-auth server); only databases this script creates are touched. The parts live in
``benchmarks/orchcost/``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # orchcost, the script's parts

from orchcost.common import ENGINES, ROOT, STUDY, TABLE, Config, install_meter, plain_storage  # noqa: E402
from orchcost.figures import SATURATION_GAIN, calls_text, compare, summarise, table_text  # noqa: E402
from orchcost.probes import ServerCpu, busy_seconds, machine, storage_calls  # noqa: E402
from orchcost.study import fresh_database, setup_study  # noqa: E402
from orchcost.worker import worker_main  # noqa: E402

DEFAULT_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
WORKER_TIMEOUT_S = 600.0


def run_config(config: Config) -> dict[str, Any]:
    """Set up the study, fork the workers, release them together, gather what they noted."""
    workdir = Path(config.workdir)
    setup_study(config)
    barrier = workdir / "go"
    ctx = multiprocessing.get_context("fork")
    procs = []
    for index in range(config.workers):
        result = workdir / f"worker-{index}.json"
        proc = ctx.Process(target=worker_main, args=(config, index, barrier, result))
        proc.start()
        procs.append(proc)
    deadline = time.monotonic() + 120
    while sum(1 for p in workdir.glob("ready-*")) < config.workers:
        if time.monotonic() > deadline or any(p.exitcode not in (None, 0) for p in procs):
            break
        time.sleep(0.01)
    busy_before, server = busy_seconds(), ServerCpu()
    go_wall, go_perf = time.time(), time.perf_counter()
    barrier.touch()
    deadline = time.monotonic() + WORKER_TIMEOUT_S
    # poll the server's processes while the workers run: a connection's backend process exits
    # with its worker, and its CPU time with it
    while any(p.is_alive() for p in procs) and time.monotonic() < deadline:
        server.poll()
        time.sleep(0.2)
    for proc in procs:
        if proc.is_alive():
            proc.kill()
        proc.join()
    done_perf = time.perf_counter()
    cpu = {"busy": busy_seconds() - busy_before, "postgres": server.total()}
    workers = []
    for index in range(config.workers):
        path = workdir / f"worker-{index}.json"
        workers.append(
            json.loads(path.read_text())
            if path.exists()
            else {"index": index, "error": "no result (killed?)", "rows": []}
        )
    trials = stored_trials(config.url)
    return summarise(
        config,
        workers=workers,
        trials=trials,
        go_wall=go_wall,
        elapsed=done_perf - go_perf,
        cpu=cpu,
    )


def stored_trials(url: str) -> list[dict[str, Any]]:
    storage = plain_storage(url)
    try:
        study_id = storage.get_study_id_from_name(STUDY)
        out = []
        for trial in storage.get_all_trials(study_id, deepcopy=False):
            complete = trial.datetime_complete
            out.append(
                {
                    "state": trial.state.name,
                    "complete": None if complete is None else complete.timestamp(),
                }
            )
        return out
    finally:
        storage.engine.dispose()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", default="1,4,8,16", help="worker counts, comma-separated")
    parser.add_argument("--backends", default="postgresql,sqlite", help="postgresql, sqlite")
    parser.add_argument("--trials-per-worker", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--heartbeat",
        type=int,
        default=30,
        help="rs-search's heartbeat interval, s (start's default 30; an idle worker polls "
        "min(interval, 10) s)",
    )
    parser.add_argument("--engines", default="optuna,rs-search", help="optuna, rs-search")
    parser.add_argument("--server", default=None, help="PostgreSQL server URL")
    parser.add_argument(
        "--storage-calls",
        type=int,
        default=30,
        metavar="N",
        help="then one worker per engine on the first storage, N trials, in this process: each "
        "storage call per trial, client and server CPU (0: skip)",
    )
    parser.add_argument("--quick", action="store_true", help="1 and 2 workers, 4 trials each")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    if args.quick:
        args.workers, args.trials_per_worker, args.heartbeat = "1,2", 4, 2
        args.storage_calls = min(args.storage_calls, 6)
    try:
        args.worker_counts = sorted({int(w) for w in args.workers.split(",") if w.strip()})
    except ValueError:
        parser.error(f"--workers {args.workers!r}: expected integers like 1,4,8,16")
    args.backend_list = [b.strip() for b in args.backends.split(",") if b.strip()]
    bad = [b for b in args.backend_list if b not in ("postgresql", "sqlite")]
    if bad or not args.backend_list:
        parser.error(f"--backends {args.backends!r}: allowed postgresql, sqlite")
    args.engine_list = [e.strip() for e in args.engines.split(",") if e.strip()]
    if not args.engine_list or any(e not in ENGINES for e in args.engine_list):
        parser.error(f"--engines {args.engines!r}: allowed optuna, rs-search")
    if not args.worker_counts or min(args.worker_counts) < 1:
        parser.error("--workers: at least one count, each at least 1")
    if args.trials_per_worker < 2:
        parser.error("--trials-per-worker: at least 2 (overhead is measured between trials)")
    if args.heartbeat < 1:
        parser.error("--heartbeat: at least 1 s")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    server = args.server or os.environ.get("RS_SEARCH_TEST_POSTGRES", DEFAULT_SERVER)
    # import everything the workers use before forking them (start-up is not a trial's cost)
    import optuna  # noqa: F401

    import rs_search.search.worker  # noqa: F401
    from rs_search.errors import RsSearchError

    info = machine()
    runs: list[dict[str, Any]] = []
    started = time.perf_counter()
    try:
        for backend in args.backend_list:
            for workers in args.worker_counts:
                # alternate which engine goes first, so a drift in the machine's load does not
                # always favour the same one
                order = [e for e in ENGINES if e in args.engine_list]
                order = order if workers % 2 == 0 else order[::-1]
                for engine in order:
                    with tempfile.TemporaryDirectory(prefix="rs-orch-") as scratch:
                        with fresh_database(backend, server, Path(scratch)) as url:
                            config = Config(
                                engine=engine,
                                backend=backend,
                                workers=workers,
                                trials_per_worker=args.trials_per_worker,
                                seed=args.seed,
                                heartbeat=args.heartbeat,
                                url=url,
                                workdir=scratch,
                            )
                            result = run_config(config)
                    runs.append(result)
                    print(
                        f"{backend} {workers:>2} workers {engine:<9}: "
                        f"{result['trials_finished']} trials, {result['trials_per_s']:.1f}/s, "
                        f"overhead p50 {result['overhead_ms']['p50']:.1f} ms, "
                        f"p99 {result['overhead_ms']['p99']:.1f} ms",
                        flush=True,
                    )
                    if result["errors"]:
                        print(f"error: {result['errors'][0]}", file=sys.stderr)
                        return 1
    except RsSearchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    comparison = compare(runs)
    print()
    print(table_text(runs, comparison))
    profiles = []
    if args.storage_calls > 0:
        install_meter()
        for engine in args.engine_list:
            profiles.append(storage_calls(engine, args.backend_list[0], server, args.storage_calls))
        print()
        print(calls_text(profiles))
    report = {
        "machine": info,
        "settings": {
            "table": str(TABLE.relative_to(ROOT)),
            "workers": args.worker_counts,
            "backends": args.backend_list,
            "trials_per_worker": args.trials_per_worker,
            "seed": args.seed,
            "heartbeat_s": args.heartbeat,
            "quick": args.quick,
            "saturation_gain": SATURATION_GAIN,
        },
        "runs": runs,
        "comparison": comparison,
        "storage_calls": profiles,
        "total_s": time.perf_counter() - started,
    }
    if args.out is not None:
        args.out.write_text(json.dumps(report, indent=2, default=_json_default) + "\n")
    return 0


def _json_default(value: Any) -> Any:
    if hasattr(value, "__dataclass_fields__"):
        return asdict(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


if __name__ == "__main__":
    sys.exit(main())
