"""One worker process: wait at the barrier, run rs-search's worker or plain Optuna's
``study.optimize``, write what it noted."""

from __future__ import annotations

import json
import time
import traceback
from pathlib import Path
from typing import Any

from orchcost.common import (
    STUDY,
    TABLE,
    Config,
    TimedAnswers,
    answers_for,
    bench_space,
    install_meter,
    plain_storage,
    sampler_for,
)


def worker_main(config: Config, index: int, barrier: Path, result: Path) -> None:
    """Run in a forked process: wait at the barrier, run the search, write ``result``."""
    out: dict[str, Any] = {"index": index, "error": None, "rows": []}
    answers = None
    try:
        install_meter()
        answers = answers_for(config)
        (barrier.parent / f"ready-{index}").touch()
        while not barrier.exists():
            time.sleep(0.005)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        out["trials_run"] = (run_rs if config.engine == "rs-search" else run_optuna)(
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


def run_rs(config: Config, index: int, answers: TimedAnswers) -> int:
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


def run_optuna(config: Config, index: int, answers: TimedAnswers) -> int:
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
        storage=plain_storage(config.url),
        sampler=sampler_for(config.seed + index),
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
