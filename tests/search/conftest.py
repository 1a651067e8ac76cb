"""Helpers for the search tests: real CLI processes, real studies, tiny candidates.

Every test here trains real (tiny) networks on the ``synthetic`` data source and talks to a real
database; nothing of rs-search is mocked. Trials are kept to 16 px, width 0.25, one block per
stage and batch 128 (8 steps per epoch) so the suite fits a 2-core CPU.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import optuna

DATA = Path(__file__).parent / "data"
MICRO = DATA / "micro.yaml"
TINY4 = DATA / "tiny4.yaml"


def cli_env(storage: str | None = None, **extra: str) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("RS_SEARCH_STORAGE", None)
    if storage is not None:
        env["RS_SEARCH_STORAGE"] = storage
    env.update(extra)
    return env


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "rs_search.cli.main", *args]


def run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cli(*args), env=env or cli_env(), cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def wait_for(
    predicate: Callable[[], bool], *, timeout: float, every: float = 0.5, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def load(study: str, storage: str) -> optuna.Study:
    """A plain Optuna view of the study (what optuna-dashboard does)."""
    return optuna.load_study(study_name=study, storage=storage)


def make_study(
    storage: str,
    tmp: Path,
    name: str,
    *,
    trials: int,
    budget: int,
    eta: int | None = None,
    space: Path = MICRO,
    sampler: str = "random",
    heartbeat: int = 1,
    grace: int = 3,
    artifacts: str | None = None,
) -> Path:
    """Create and queue a study the way ``rs-search start`` does, without running workers.
    Returns the artifact directory. Short heartbeats (1 s / 3 s) make a dead worker's trial stale
    quickly; production uses 30 s / 120 s."""
    from rs_search.search.launch import plan_start
    from rs_search.search.study import create_or_resume
    from rs_search.study.queue import enqueue_work

    art = tmp / "art"
    plan = plan_start(
        space_file=space,
        budget=f"{budget}epochs",
        study_name=name,
        storage=storage,
        data="synthetic:10",
        trials=trials,
        timeout=None,
        workers=1,
        device="cpu",
        sampler=sampler,
        eta=eta,
        min_rung=None,
        seed=0,
        artifacts=artifacts or str(art),
        heartbeat=heartbeat,
        grace=grace,
    )
    study, created = create_or_resume(
        study_name=name, storage=storage, settings=plan.settings, space=plan.space
    )
    assert created
    enqueue_work(study, plan.settings, plan.space)
    return art
