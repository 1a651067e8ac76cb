"""Helpers for the search tests: real CLI processes, real studies, tiny candidates.

Every test here trains real (tiny) networks on the ``synthetic`` data source and talks to a real
database; nothing of rs-search is mocked. Trials are kept to 16 px, width 0.25, one block per
stage and batch 128 (8 steps per epoch) so the suite fits a 2-core CPU.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

import optuna

DATA = Path(__file__).parent / "data"
MICRO = DATA / "micro.yaml"
TINY4 = DATA / "tiny4.yaml"
# MICRO with batch 8: 128 steps per epoch, for tests that signal a worker inside an epoch.
MICRO_STEPS = DATA / "micro_steps.yaml"


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


class OutputLines:
    """A process's output pipe, read line by line on a thread, so that a test can wait for the
    line that marks an event (a blocking wait, with a timeout) and the process never stalls on
    a full pipe. Keeps every line for the test's later assertions."""

    def __init__(self, stream: IO[str]) -> None:
        self.lines: list[str] = []
        self.closed = False
        self._next = 0  # the first line the next ``wait_for`` looks at
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self.closed = True
            self._changed.notify_all()

    def wait_for(self, pattern: str, *, timeout: float) -> re.Match[str]:
        """The first line after the previous match that matches ``pattern`` (``re.search``)."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                while self._next < len(self.lines):
                    found = regex.search(self.lines[self._next])
                    self._next += 1
                    if found is not None:
                        return found
                left = deadline - time.monotonic()
                if self.closed or left <= 0:
                    why = "the output closed" if self.closed else f"timed out after {timeout:.0f}s"
                    raise AssertionError(
                        f"{why} before a line matched {pattern!r}; output:\n{self.text()}"
                    )
                self._changed.wait(left)

    def text(self) -> str:
        return "".join(self.lines)

    def all(self, *, timeout: float) -> str:
        """Everything, once the process has closed its end of the pipe."""
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"output still open after {timeout:.0f}s"
        return self.text()


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
