"""A fresh database and the study in it, made as each engine's user makes it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from orchcost.common import STUDY, TABLE, Config, bench_space, plain_storage


def setup_study(config: Config) -> None:
    """The study as each engine's user makes it, in the fresh database ``config.url``."""
    import optuna

    from rs_search.bench.table import load_table

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    table = load_table(TABLE)
    space = bench_space(table)
    if config.engine == "optuna":
        storage = plain_storage(config.url)
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
