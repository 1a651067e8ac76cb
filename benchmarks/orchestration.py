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

The server URL comes from ``--server`` or ``$RS_SEARCH_TEST_POSTGRES`` (default: the local
trust-auth server); only databases this script creates are touched.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import platform
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TABLE = ROOT / "tests" / "bench" / "data" / "tiny-digits-9ep.jsonl"
DEFAULT_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
STUDY = "orchestration"
ENGINES = ("optuna", "rs-search")
# Project heuristic: a worker count whose successor raises the rate by less than this is where
# the rate stopped rising (run-to-run noise on a shared machine is several percent).
SATURATION_GAIN = 1.10
# The must-show of issue 11: at the largest worker count on PostgreSQL.
MUST_RATIO = 0.8
MUST_P99_MS = 100.0
WORKER_TIMEOUT_S = 600.0


@dataclass(frozen=True, kw_only=True)
class Config:
    engine: str  # optuna | rs-search
    backend: str  # postgresql | sqlite
    workers: int
    trials_per_worker: int
    seed: int
    heartbeat: int  # rs-search's study heartbeat interval (s); grace is 4x
    url: str = ""  # filled per run (a fresh database)
    workdir: str = ""

    @property
    def trials(self) -> int:
        return self.workers * self.trials_per_worker


# -- the space and the answers ---------------------------------------------------------------


def bench_space(table: Any) -> Any:
    """The table's space with ``lr_per_256`` a log range around the table's value (docstring)."""
    from rs_search.space import SearchSpace

    spec = table.header.space.to_dict()
    lr = float(spec["recipe"]["lr_per_256"])
    spec["recipe"]["lr_per_256"] = {"low": lr / 2, "high": lr * 2, "log": True}
    spec["name"] = f"{spec.get('name', 'table')}-orchestration"
    return SearchSpace.from_dict(spec, source="orchestration benchmark space")


@dataclass
class Meter:
    """Process-wide counters: SQL statements and their time, time in the sampler (and the SQL
    it ran). One per worker process."""

    sql_n: int = 0
    sql_s: float = 0.0
    sampler_s: float = 0.0
    sampler_depth: int = 0

    def snapshot(self) -> tuple[int, float, float]:
        return self.sql_n, self.sql_s, self.sampler_s


METER = Meter()


def install_meter() -> None:
    """Count every SQL statement of every engine in this process, and time Optuna's TPE sampler
    (wrapped at the class: the timing is the only change)."""
    import optuna
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    def before(conn: Any, *args: Any) -> None:
        conn.info.setdefault("rs_bench_t", []).append(time.perf_counter())

    def after(conn: Any, *args: Any) -> None:
        started = conn.info["rs_bench_t"].pop()
        METER.sql_n += 1
        METER.sql_s += time.perf_counter() - started

    event.listen(Engine, "before_cursor_execute", before)
    event.listen(Engine, "after_cursor_execute", after)
    cls = optuna.samplers.TPESampler
    for name in ("infer_relative_search_space", "sample_relative", "sample_independent"):
        setattr(cls, name, _timed(getattr(cls, name)))


def _timed(method: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        METER.sampler_depth += 1
        started = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            METER.sampler_depth -= 1
            if METER.sampler_depth == 0:
                METER.sampler_s += time.perf_counter() - started

    return wrapper


@dataclass
class TimedAnswers:
    """A ``TrainLauncher`` answered from the table, mapping the benchmark's learning rate back to
    the table's, and noting per trial when answering began and what it cost (``rows``)."""

    launcher: Any  # rs_search.bench.answer.TableLauncher
    table_lr: float
    rows: list[dict[str, float]] = field(default_factory=list)

    def __call__(
        self,
        candidate: Any,
        *,
        out_dir: Path,
        resume: bool,
        seed: int,
        on_epoch: Callable[[Any], bool],
        should_stop: Callable[[], bool],
    ) -> Any:
        started = time.perf_counter()
        sql_n, sql_s, sampler_s = METER.snapshot()
        row = {
            "t": started,
            "cpu": time.process_time(),
            "sql_n": sql_n,
            "sql_s": sql_s,
            "sampler_s": sampler_s,
        }
        in_callbacks = 0.0

        def timed_epoch(metrics: Any) -> bool:
            nonlocal in_callbacks
            began = time.perf_counter()
            try:
                return on_epoch(metrics)
            finally:
                in_callbacks += time.perf_counter() - began

        mapped = replace(candidate, recipe=replace(candidate.recipe, lr_per_256=self.table_lr))
        try:
            return self.launcher(
                mapped,
                out_dir=out_dir,
                resume=resume,
                seed=seed,
                on_epoch=timed_epoch,
                should_stop=should_stop,
            )
        finally:
            # the search's own per-epoch work (curve, rung decisions) is overhead, not training
            row["answer_s"] = time.perf_counter() - started - in_callbacks
            self.rows.append(row)


# -- one worker process ----------------------------------------------------------------------


def worker_main(config: Config, index: int, barrier: Path, result: Path) -> None:
    """Run in a forked process: wait at the barrier, run the search, write ``result``."""
    out: dict[str, Any] = {"index": index, "error": None, "rows": []}
    answers = None
    try:
        install_meter()
        answers = _answers(config)
        (barrier.parent / f"ready-{index}").touch()
        while not barrier.exists():
            time.sleep(0.005)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        out["trials_run"] = (_run_rs if config.engine == "rs-search" else _run_optuna)(
            config, index, answers
        )
        out["cpu_s"] = time.process_time() - cpu0
        out["wall_s"] = time.perf_counter() - wall0
        out["end_t"] = time.perf_counter()
    except BaseException:  # noqa: BLE001 - reported to the parent, which fails the run
        out["error"] = traceback.format_exc(limit=8)
    if answers is not None:
        out["rows"] = answers.rows
    result.write_text(json.dumps(out))


def _answers(config: Config) -> TimedAnswers:
    from rs_search.bench.answer import TableAnswers, TableLauncher
    from rs_search.bench.table import load_table

    table = load_table(TABLE)
    lr = float(table.header.space.to_dict()["recipe"]["lr_per_256"])
    return TimedAnswers(TableLauncher(TableAnswers(table)), table_lr=lr)


def _run_rs(config: Config, index: int, answers: TimedAnswers) -> int:
    from rs_search.search.worker import StopFlag, run_worker

    report = run_worker(
        study_name=STUDY,
        storage=config.url,
        device="cpu",
        artifacts=str(Path(config.workdir) / "artifacts"),
        make_launcher=lambda settings: answers,
        worker_index=index,
        echo=lambda line: None,
        stop=StopFlag(),
    )
    return report.trials_run


def _run_optuna(config: Config, index: int, answers: TimedAnswers) -> int:
    import optuna

    from rs_search.bench.answer import TableAnswers, TableLatency
    from rs_search.bench.table import load_table

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    table = load_table(TABLE)
    space = bench_space(table)
    latency = TableLatency(TableAnswers(table))
    budget = table.header.budget_epochs
    study = optuna.load_study(
        study_name=STUDY,
        storage=_plain_storage(config.url),
        sampler=_sampler(config.seed + index),
    )

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        candidate = space.sample(trial, epochs=budget)
        figures = latency.figures(candidate.arch)
        run = answers(
            candidate,
            out_dir=Path(config.workdir) / f"plain-{trial.number}",
            resume=False,
            seed=trial.number,
            on_epoch=lambda metrics: True,
            should_stop=lambda: False,
        )
        return float(run.curve[-1].row["val_top1"]), figures.median_ms

    study.optimize(objective, n_trials=config.trials_per_worker)
    return config.trials_per_worker


def _sampler(seed: int) -> Any:
    import optuna

    # what rs_search.search.study.make_sampler builds for "tpe"
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True, multivariate=True)


def _plain_storage(url: str) -> Any:
    """Optuna's own RDBStorage with its defaults, except SQLite's lock wait (60 s, as ours):
    Python's default 5 s fails plain Optuna with 'database is locked' under 16 processes."""
    import optuna

    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)


# -- the parent: set up, run, measure ----------------------------------------------------------


def setup_study(config: Config) -> None:
    """The study as each engine's user makes it, in the fresh database ``config.url``."""
    import optuna

    from rs_search.bench.table import load_table

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    table = load_table(TABLE)
    space = bench_space(table)
    if config.engine == "optuna":
        storage = _plain_storage(config.url)
        study = optuna.create_study(
            study_name=STUDY,
            storage=storage,
            directions=[o.direction for o in space.objectives],
        )
        storage.engine.dispose()
        return
    from rs_search.search.settings import settings_from_space
    from rs_search.search.study import create_or_resume
    from rs_search.study.queue import enqueue_work
    from rs_search.study.storage import engine_of

    settings = settings_from_space(
        space,
        budget_epochs=table.header.budget_epochs,
        data=table.header.data,
        eta=3,  # rs-search start's defaults: halving on, eta 3, the default lowest rung
        min_rung=None,
        n_trials=config.trials,
        sampler="tpe",
        seed=config.seed,
        heartbeat_interval=config.heartbeat,
        grace_period=4 * config.heartbeat,
        artifacts=str(Path(config.workdir) / "artifacts"),
    )
    study, _ = create_or_resume(
        study_name=STUDY, storage=config.url, settings=settings, space=space
    )
    enqueue_work(study, settings, space)
    engine = engine_of(study)
    assert engine is not None
    _cache_table_latency(engine, table, settings.target)
    engine.dispose()


def _cache_table_latency(engine: Any, table: Any, target: dict[str, Any]) -> None:
    """The table's latency figures in the cache, under this machine's CPU name (what a worker
    with ``--device cpu`` looks up), as a latency worker would have left them."""
    from rs_search.latency.cache import LatencyCache
    from rs_search.latency.profiles import HardwareProfile, device_name, torch_version
    from rs_search.latency.result import LatencyResult

    profile = HardwareProfile.from_dict(dict(target))
    here = device_name("cpu")
    cache = LatencyCache(engine)
    seen: set[str] = set()
    for entry in table.entries:
        arch = entry.candidate.arch
        if entry.latency is None or arch.key() in seen:
            continue
        seen.add(arch.key())
        figure = entry.latency
        cache.put(
            arch,
            profile,
            LatencyResult(
                arch_key=arch.key(),
                profile_name=profile.name,
                profile_key=profile.key(),
                device_name=here,
                torch_version=torch_version(),
                status="ok",
                mode=profile.mode,
                median_ms=figure.median_ms,
                p90_ms=figure.p90_ms,
                spread=figure.spread,
                peak_memory_mb=figure.memory_mb,
                iterations=1,
                repeats=1,
                stable=True,
                measured_at=datetime.now().astimezone().isoformat(),
                batch_size=profile.batch_size,
            ),
        )


@contextmanager
def fresh_database(backend: str, server: str, workdir: Path) -> Iterator[str]:
    """A brand-new database for one run: a uniquely named PostgreSQL database on ``server``
    (dropped afterwards, even on failure) or a SQLite file in ``workdir``."""
    if backend == "sqlite":
        yield f"sqlite:///{workdir / 'study.db'}"
        return
    from rs_search.storage.admin import create_database, drop_database

    name = f"rs_orch_{uuid.uuid4().hex[:12]}"
    url = create_database(server, name)
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        drop_database(server, name)


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
    busy_before, server = _busy_seconds(), ServerCpu()
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
    cpu = {"busy": _busy_seconds() - busy_before, "postgres": server.total()}
    workers = []
    for index in range(config.workers):
        path = workdir / f"worker-{index}.json"
        workers.append(
            json.loads(path.read_text())
            if path.exists()
            else {"index": index, "error": "no result (killed?)", "rows": []}
        )
    trials = _stored_trials(config.url)
    return summarise(
        config,
        workers=workers,
        trials=trials,
        go_wall=go_wall,
        elapsed=done_perf - go_perf,
        cpu=cpu,
    )


def _stored_trials(url: str) -> list[dict[str, Any]]:
    storage = _plain_storage(url)
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


# -- CPU accounting ---------------------------------------------------------------------------


def _busy_seconds() -> float:
    """CPU seconds the whole machine has been busy (all CPUs; /proc/stat less idle and iowait)."""
    fields = [float(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
    return (sum(fields) - idle) / os.sysconf("SC_CLK_TCK")


def _postgres_cpu() -> dict[int, float]:
    """pid -> CPU seconds (user + system) of every process named ``postgres`` on this machine."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, float] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # exited meanwhile
        if text[text.find("(") + 1 : text.rfind(")")].startswith("postgres"):
            rest = text[text.rfind(")") + 2 :].split()
            out[int(stat.parent.name)] = (float(rest[11]) + float(rest[12])) / tick
    return out


class ServerCpu:
    """The PostgreSQL server's CPU seconds since construction, polled: a backend that started
    after it counts from zero, one that exited counts up to its last poll (at most one polling
    interval is lost). The whole local server: other users' sessions are included."""

    def __init__(self) -> None:
        self.base = _postgres_cpu()
        self.last = dict(self.base)

    def poll(self) -> None:
        self.last.update(_postgres_cpu())

    def total(self) -> float:
        self.poll()
        return sum(max(0.0, cpu - self.base.get(pid, 0.0)) for pid, cpu in self.last.items())


# -- figures ------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default), nan for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def summarise(
    config: Config,
    *,
    workers: list[dict[str, Any]],
    trials: list[dict[str, Any]],
    go_wall: float,
    elapsed: float,
    cpu: dict[str, float],
) -> dict[str, Any]:
    errors = [w["error"] for w in workers if w.get("error")]
    overhead, answer, sql_n, sql_ms, sampler_ms, cpu_ms = [], [], [], [], [], []
    for worker in workers:
        rows = worker["rows"]
        for a, b in zip(rows, rows[1:], strict=False):
            cycle = b["t"] - a["t"]
            overhead.append(1000 * (cycle - a["answer_s"]))
            answer.append(1000 * a["answer_s"])
            sql_n.append(b["sql_n"] - a["sql_n"])
            sql_ms.append(1000 * (b["sql_s"] - a["sql_s"]))
            sampler_ms.append(1000 * (b["sampler_s"] - a["sampler_s"]))
            cpu_ms.append(1000 * (b["cpu"] - a["cpu"]))
    finished = [t for t in trials if t["state"] in ("COMPLETE", "PRUNED", "FAIL")]
    ends = [t["complete"] for t in finished if t["complete"] is not None]
    makespan = max(ends) - go_wall if ends else math.nan
    states: dict[str, int] = {}
    for t in trials:
        states[t["state"]] = states.get(t["state"], 0) + 1
    workers_cpu = sum(float(w.get("cpu_s", 0.0)) for w in workers)
    cores = os.cpu_count() or 1
    return {
        "engine": config.engine,
        "backend": config.backend,
        "workers": config.workers,
        "trials_budget": config.trials,
        "trials_finished": len(finished),
        "states": states,
        "errors": errors,
        "makespan_s": makespan,
        "trials_per_s": len(finished) / makespan if makespan and makespan > 0 else math.nan,
        "overhead_ms": {
            "p50": percentile(overhead, 50),
            "p99": percentile(overhead, 99),
            "mean": sum(overhead) / len(overhead) if overhead else math.nan,
            "n": len(overhead),
        },
        "answer_ms_p50": percentile(answer, 50),
        # medians per trial of what the overhead is made of (median of each, not a sum)
        "per_trial_p50": {
            "sql_statements": percentile([float(v) for v in sql_n], 50),
            "sql_ms": percentile(sql_ms, 50),
            "sampler_ms": percentile(sampler_ms, 50),
            "cpu_ms": percentile(cpu_ms, 50),
        },
        "cpu": {
            "cores": cores,
            "elapsed_s": elapsed,
            "machine_busy": cpu["busy"] / (cores * elapsed) if elapsed > 0 else math.nan,
            "workers_share": workers_cpu / (cores * elapsed) if elapsed > 0 else math.nan,
            "postgres_share": cpu["postgres"] / (cores * elapsed) if elapsed > 0 else math.nan,
            "others_share": max(0.0, cpu["busy"] - workers_cpu - cpu["postgres"])
            / (cores * elapsed)
            if elapsed > 0
            else math.nan,
        },
    }


def saturation(rates: dict[int, float]) -> int | None:
    """The first worker count whose successor raises the rate by less than ``SATURATION_GAIN``;
    None when the rate still rises at the largest count measured."""
    counts = sorted(rates)
    for here, after in zip(counts, counts[1:], strict=False):
        if not rates[after] >= SATURATION_GAIN * rates[here]:
            return here
    return None


def compare(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per storage: rs-search / plain Optuna trial-rate ratios, saturation per engine, and the
    must-show check at the largest worker count."""
    out: dict[str, Any] = {}
    for backend in sorted({r["backend"] for r in runs}):
        mine = [r for r in runs if r["backend"] == backend]
        rates = {
            engine: {r["workers"]: r["trials_per_s"] for r in mine if r["engine"] == engine}
            for engine in ENGINES
        }
        counts = sorted(set(rates["optuna"]) & set(rates["rs-search"]))
        ratios = {str(n): rates["rs-search"][n] / rates["optuna"][n] for n in counts}
        largest = counts[-1] if counts else None
        rs_top = next(
            (r for r in mine if r["engine"] == "rs-search" and r["workers"] == largest), None
        )
        p99 = rs_top["overhead_ms"]["p99"] if rs_top else math.nan
        ratio = ratios.get(str(largest), math.nan)
        out[backend] = {
            "ratio": ratios,
            "saturation": {engine: saturation(rates[engine]) for engine in ENGINES},
            "peak": {
                engine: max(rates[engine].items(), key=lambda kv: kv[1])[0]
                for engine in ENGINES
                if rates[engine]
            },
            "at_largest": {
                "workers": largest,
                "ratio": ratio,
                "rs_p99_ms": p99,
                "met": bool(ratio >= MUST_RATIO and p99 < MUST_P99_MS),
            },
        }
    return out


STORAGE_METHODS = (
    "get_all_trials",
    "get_trial",
    "set_trial_user_attr",
    "set_trial_system_attr",
    "set_trial_param",
    "set_trial_state_values",
    "create_new_trial",
    "record_heartbeat",
    "_get_stale_trial_ids",
    "get_study_user_attrs",
    "get_study_system_attrs",
    "get_study_directions",
    "get_study_id_from_name",
)


def storage_calls(engine: str, backend: str, server: str, trials: int) -> dict[str, Any]:
    """One worker, in this process, ``trials`` trials: each storage method the search calls
    (through Optuna's cached storage: what the search sees), how often per trial and the wall
    time in it; the process's CPU and the PostgreSQL server's CPU per trial. What tells where a
    trial's overhead goes. Call it last: it wraps the storage class of this process."""
    from optuna.storages._cached_storage import _CachedStorage

    calls: dict[str, list[float]] = {name: [0, 0.0] for name in STORAGE_METHODS}
    depth = [0]

    def wrap(name: str) -> None:
        method = getattr(_CachedStorage, name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            depth[0] += 1
            began = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                depth[0] -= 1
                if depth[0] == 0:
                    calls[name][0] += 1
                    calls[name][1] += time.perf_counter() - began

        wrapper.__wrapped__ = method  # type: ignore[attr-defined]
        setattr(_CachedStorage, name, wrapper)

    with tempfile.TemporaryDirectory(prefix="rs-orch-calls-") as scratch:
        with fresh_database(backend, server, Path(scratch)) as url:
            config = Config(
                engine=engine,
                backend=backend,
                workers=1,
                trials_per_worker=trials,
                seed=0,
                heartbeat=30,
                url=url,
                workdir=scratch,
            )
            setup_study(config)
            for name in STORAGE_METHODS:
                if hasattr(_CachedStorage, name):
                    wrap(name)
            answers = _answers(config)
            sql_n, sql_s, sampler_s = METER.snapshot()
            server_cpu = ServerCpu()
            cpu0, wall0 = time.process_time(), time.perf_counter()
            try:
                (_run_rs if engine == "rs-search" else _run_optuna)(config, 0, answers)
            finally:
                for name in STORAGE_METHODS:
                    if hasattr(_CachedStorage, name):
                        setattr(_CachedStorage, name, getattr(_CachedStorage, name).__wrapped__)
            wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
            served = server_cpu.total() if backend == "postgresql" else math.nan
            end_n, end_s, end_sampler = METER.snapshot()
    return {
        "engine": engine,
        "backend": backend,
        "trials": trials,
        "wall_ms_per_trial": 1000 * wall / trials,
        "client_cpu_ms_per_trial": 1000 * cpu / trials,
        "server_cpu_ms_per_trial": 1000 * served / trials,
        "sql_statements_per_trial": (end_n - sql_n) / trials,
        "sql_ms_per_trial": 1000 * (end_s - sql_s) / trials,
        "sampler_ms_per_trial": 1000 * (end_sampler - sampler_s) / trials,
        "calls": {
            name: {"per_trial": n / trials, "ms_per_trial": 1000 * t / trials}
            for name, (n, t) in sorted(calls.items(), key=lambda kv: -kv[1][1])
            if n
        },
    }


def calls_text(profiles: list[dict[str, Any]]) -> str:
    lines = []
    for p in profiles:
        lines.append(
            f"{p['engine']} on {p['backend']}, 1 worker, {p['trials']} trials: "
            f"{p['wall_ms_per_trial']:.0f} ms/trial wall, client CPU "
            f"{p['client_cpu_ms_per_trial']:.0f} ms, server CPU "
            f"{p['server_cpu_ms_per_trial']:.0f} ms, {p['sql_statements_per_trial']:.0f} SQL "
            f"statements ({p['sql_ms_per_trial']:.0f} ms), "
            f"sampler {p['sampler_ms_per_trial']:.0f} ms"
        )
        for name, c in p["calls"].items():
            lines.append(
                f"    {name:<28} {c['per_trial']:5.1f} calls/trial "
                f"{c['ms_per_trial']:7.1f} ms/trial"
            )
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    from rs_search.latency.profiles import device_name

    try:
        import optuna

        optuna_version = optuna.__version__
    except ImportError:  # pragma: no cover
        optuna_version = "?"
    return {
        "cpu": device_name("cpu"),
        "cores": os.cpu_count(),
        "load_avg_1m_at_start": os.getloadavg()[0],
        "python": platform.python_version(),
        "optuna": optuna_version,
        "when": datetime.now().astimezone().isoformat(timespec="seconds"),
    }


def table_text(runs: list[dict[str, Any]], comparison: dict[str, Any]) -> str:
    head = (
        f"{'storage':<10} {'workers':>7} {'engine':<9} {'trials':>6} {'trials/s':>8} "
        f"{'ratio':>5} {'p50 ms':>7} {'p99 ms':>7} {'SQL/trial':>9} {'SQL ms':>7} "
        f"{'TPE ms':>7} {'CPU ms':>7} {'busy':>5} {'ours':>5} {'pg':>5} {'others':>6}"
    )
    lines = [head, "-" * len(head)]
    for r in runs:
        ratio = comparison[r["backend"]]["ratio"].get(str(r["workers"]))
        shown = f"{ratio:.2f}" if r["engine"] == "rs-search" and ratio is not None else ""
        p, c = r["per_trial_p50"], r["cpu"]
        lines.append(
            f"{r['backend']:<10} {r['workers']:>7} {r['engine']:<9} {r['trials_finished']:>6} "
            f"{r['trials_per_s']:>8.1f} {shown:>5} {r['overhead_ms']['p50']:>7.1f} "
            f"{r['overhead_ms']['p99']:>7.1f} {p['sql_statements']:>9.0f} {p['sql_ms']:>7.1f} "
            f"{p['sampler_ms']:>7.1f} {p['cpu_ms']:>7.1f} {c['machine_busy']:>5.0%} "
            f"{c['workers_share']:>5.0%} {c['postgres_share']:>5.0%} {c['others_share']:>6.0%}"
        )
    lines.append("")
    for backend, summary in comparison.items():
        sat = summary["saturation"]
        words = ", ".join(
            f"{e} {'still rising at ' + str(max(summary['ratio'], key=int, default='?')) if sat[e] is None else 'stops rising after ' + str(sat[e])} workers"  # noqa: E501
            for e in ENGINES
        )
        top = summary["at_largest"]
        lines.append(
            f"{backend}: trial rate {words}. At {top['workers']} workers: rs-search "
            f"{top['ratio']:.2f}x plain Optuna's rate, p99 overhead {top['rs_p99_ms']:.0f} ms "
            f"(must-show >= {MUST_RATIO}x and < {MUST_P99_MS:.0f} ms: "
            f"{'met' if top['met'] else 'NOT met'})"
        )
    lines.append(
        "busy: the machine's CPUs in use during the run; ours: the worker processes; pg: every "
        "PostgreSQL server process; others: everything else on the machine"
    )
    return "\n".join(lines)


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
