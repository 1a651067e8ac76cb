"""What every part shares: the run's settings, the benchmark space, the answered training, and
the meters a worker process installs."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
TABLE = ROOT / "tests" / "bench" / "data" / "tiny-digits-9ep.jsonl"
STUDY = "orchestration"
ENGINES = ("optuna", "rs-search")


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


def sampler_for(seed: int) -> Any:
    import optuna

    # what rs_search.search.study.make_sampler builds for "tpe"
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True, multivariate=True)


def plain_storage(url: str) -> Any:
    """Optuna's own RDBStorage with its defaults, except SQLite's lock wait (60 s, as ours):
    Python's default 5 s fails plain Optuna with 'database is locked' under 16 processes."""
    import optuna

    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)


def answers_for(config: Config) -> TimedAnswers:
    from rs_search.bench.answer import TableAnswers, TableLauncher
    from rs_search.bench.table import load_table

    table = load_table(TABLE)
    lr = float(table.header.space.to_dict()["recipe"]["lr_per_256"])
    return TimedAnswers(TableLauncher(TableAnswers(table)), table_lr=lr)
