"""The worker runs its trials with its start-up heap frozen (``worker._frozen_heap``): the full
collection after every trial (``gc_after_trial``) walks only what trials made, and still frees a
trial's garbage; the caller's collector is as it was afterwards. Measured before the change by
``benchmarks/orchestration.py``: 70-180 ms per trial spent walking torch's and Optuna's objects."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path
from typing import Any

import pytest

from rs_search.bench.answer import TableAnswers, TableLauncher
from rs_search.bench.table import load_table
from rs_search.env import Environment
from rs_search.search.settings import settings_from_space
from rs_search.search.study import create_or_resume
from rs_search.search.worker import StopFlag, run_worker
from rs_search.study.queue import enqueue_work
from rs_search.study.storage import engine_of

pytestmark = pytest.mark.slow  # a real worker; latency measured for real (tiny networks)

TABLE = Path(__file__).resolve().parents[1] / "bench" / "data" / "tiny-digits-9ep.jsonl"


class _Cycle:
    """Garbage only the cycle collector can free."""

    def __init__(self) -> None:
        self.me = self


def test_trials_run_with_the_start_up_heap_frozen_and_their_garbage_collected(
    tmp_path: Path,
) -> None:
    table = load_table(TABLE)
    space = table.header.space
    settings = settings_from_space(
        space,
        budget_epochs=table.header.budget_epochs,
        data=table.header.data,
        eta=3,
        min_rung=None,
        n_trials=3,
        sampler="tpe",
        seed=0,
        heartbeat_interval=30,
        grace_period=120,
        artifacts=str(tmp_path / "artifacts"),
    )
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study, _ = create_or_resume(study_name="gc", storage=storage, settings=settings, space=space)
    enqueue_work(study, settings, space)
    engine = engine_of(study)
    assert engine is not None
    engine.dispose()

    answers = TableLauncher(TableAnswers(table))
    frozen: list[int] = []
    garbage: list[weakref.ref[_Cycle]] = []

    def launcher(candidate: Any, **kwargs: Any) -> Any:
        # the previous trial's cyclic garbage was collected after it ended
        assert all(ref() is None for ref in garbage)
        frozen.append(gc.get_freeze_count())
        garbage.append(weakref.ref(_Cycle()))
        return answers(candidate, **kwargs)

    before = gc.get_freeze_count()
    assert before == 0
    report = run_worker(
        study_name="gc",
        storage=storage,
        device="cpu",
        make_launcher=lambda s: launcher,
        worker_index=0,
        echo=lambda line: None,
        stop=StopFlag(),
        environment=Environment.from_environ(),
    )
    assert report.reason == "budget spent" and report.trials_run == 3
    assert len(frozen) >= 2  # the two seeds train (a sampled repeat would not)
    # the worker's start-up objects (modules, study, objective) were frozen while trials ran
    assert all(count > 1000 for count in frozen), frozen
    assert gc.get_freeze_count() == before  # and the collector is as it was
    gc.collect()
    assert all(ref() is None for ref in garbage)
