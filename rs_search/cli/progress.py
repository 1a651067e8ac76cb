"""Progress for everything a user waits on (start, worker, train): rich bars on a terminal, plain
lines elsewhere.

On a terminal this is a rich progress bar (nested waits, such as a worker's trials and a trial's
epochs, share one live display as two bars). When the stream is not a terminal (a log file, CI,
Slurm, ``kubectl logs``) a bar would be a mess of carriage returns, so it prints one plain line per
update instead, at most every ``min_interval_s`` seconds plus the first and the last one::

    train 2-2-2-2: 3/10 epochs (30%) loss=1.234 val_top1=45.1 [0:00:42 elapsed, ~0:01:38 left]

Usage::

    with progress("train", total=epochs, unit="epochs") as bar:
        for epoch in ...:
            bar.advance(loss=loss, val_top1=top1)

Progress goes to stderr by default so that stdout stays for results (``--json``).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import IO, Any, TypeVar

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as RichProgress

T = TypeVar("T")

#: ``RS_SEARCH_PROGRESS=plain`` forces plain lines, ``rich`` forces bars, ``off`` silences both.
ENV_MODE = "RS_SEARCH_PROGRESS"

_lock = threading.Lock()
_shared: dict[int, tuple[RichProgress, int]] = {}  # id(stream) -> (live display, users)


def is_terminal(stream: IO[str]) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and os.environ.get("TERM", "") != "dumb"


def _format_fields(fields: dict[str, Any]) -> str:
    parts = []
    for key, value in fields.items():
        if value is None:
            continue
        parts.append(f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}")
    return " ".join(parts)


def _clock(seconds: float) -> str:
    return str(timedelta(seconds=int(max(0.0, seconds))))


class Progress:
    """One task: ``advance``/``update`` it, ``log`` lines above it; use via ``progress()``."""

    def __init__(
        self,
        description: str,
        *,
        total: float | None = None,
        unit: str = "",
        stream: IO[str] | None = None,
        mode: str | None = None,
        min_interval_s: float = 10.0,
    ) -> None:
        self.description = description
        self.total = total
        self.unit = unit
        self.completed = 0.0
        self.fields: dict[str, Any] = {}
        self.stream = stream if stream is not None else sys.stderr
        mode = mode or os.environ.get(ENV_MODE) or ("rich" if is_terminal(self.stream) else "plain")
        if mode not in ("rich", "plain", "off"):
            raise ValueError(f"progress mode {mode!r}; allowed: rich, plain, off")
        self.mode = mode
        self.min_interval_s = min_interval_s
        self._started = time.monotonic()
        self._last_line = -float("inf")
        self._printed_state: tuple[float, str] | None = None
        self._rich: RichProgress | None = None
        self._task: TaskID | None = None

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> Progress:
        self._started = time.monotonic()
        if self.mode == "rich":
            self._rich = _acquire(self.stream)
            self._task = self._rich.add_task(escape(self.description), total=self.total, fields="")
        elif self.mode == "plain":
            self._emit(force=True)
        return self

    def close(self) -> None:
        if self.mode == "rich" and self._rich is not None:
            assert self._task is not None
            self._rich.refresh()
            self._rich.remove_task(self._task)
            _release(self.stream)
            self._rich = None
        elif self.mode == "plain":
            self._emit(force=True, final=True)

    # -- updates --------------------------------------------------------------------------------
    def advance(self, amount: float = 1, **fields: Any) -> None:
        self.update(completed=self.completed + amount, **fields)

    def update(
        self,
        *,
        completed: float | None = None,
        total: float | None = None,
        description: str | None = None,
        **fields: Any,
    ) -> None:
        if completed is not None:
            self.completed = completed
        if total is not None:
            self.total = total
        if description is not None:
            self.description = description
        self.fields.update(fields)
        if self.mode == "rich" and self._rich is not None:
            assert self._task is not None
            self._rich.update(
                self._task,
                completed=self.completed,
                total=self.total,
                description=escape(self.description),  # names from a study: not markup
                fields=escape(_format_fields(self.fields)),
            )
        elif self.mode == "plain":
            self._emit(force=self.total is not None and self.completed >= self.total)

    def log(self, message: str) -> None:
        """A line of its own (above the bar on a terminal)."""
        if self.mode == "rich" and self._rich is not None:
            self._rich.console.print(message, markup=False, highlight=False)
        elif self.mode == "plain":
            print(message, file=self.stream, flush=True)

    # -- plain lines ----------------------------------------------------------------------------
    def line(self) -> str:
        unit = f" {self.unit}" if self.unit else ""
        done = f"{self.completed:g}"
        if self.total:
            pct = 100.0 * self.completed / self.total
            text = f"{self.description}: {done}/{self.total:g}{unit} ({pct:.0f}%)"
        else:
            text = f"{self.description}: {done}{unit}"
        extra = _format_fields(self.fields)
        if extra:
            text += f" {extra}"
        elapsed = time.monotonic() - self._started
        timing = f"{_clock(elapsed)} elapsed"
        if self.total and 0 < self.completed < self.total:
            timing += f", ~{_clock(elapsed * (self.total - self.completed) / self.completed)} left"
        return f"{text} [{timing}]"

    def _emit(self, *, force: bool = False, final: bool = False) -> None:
        now = time.monotonic()
        state = (self.completed, _format_fields(self.fields))
        if final and state == self._printed_state:
            return  # the last update was already printed
        if not force and now - self._last_line < self.min_interval_s:
            return
        if state == self._printed_state and not final:
            return
        self._last_line = now
        self._printed_state = state
        print(self.line(), file=self.stream, flush=True)


def _acquire(stream: IO[str]) -> RichProgress:
    with _lock:
        entry = _shared.get(id(stream))
        if entry is None:
            live = RichProgress(
                TextColumn("[progress.description]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TaskProgressColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[fields]}"),
                console=Console(file=stream, highlight=False, emoji=False),
                transient=False,
            )
            live.start()
            _shared[id(stream)] = (live, 1)
            return live
        live, users = entry
        _shared[id(stream)] = (live, users + 1)
        return live


def _release(stream: IO[str]) -> None:
    with _lock:
        live, users = _shared[id(stream)]
        if users == 1:
            live.stop()
            del _shared[id(stream)]
        else:
            _shared[id(stream)] = (live, users - 1)


@contextmanager
def progress(
    description: str,
    *,
    total: float | None = None,
    unit: str = "",
    stream: IO[str] | None = None,
    mode: str | None = None,
    min_interval_s: float = 10.0,
) -> Iterator[Progress]:
    """A progress task for the duration of the ``with`` block (see the module docstring)."""
    bar = Progress(
        description, total=total, unit=unit, stream=stream, mode=mode, min_interval_s=min_interval_s
    ).start()
    try:
        yield bar
    finally:
        bar.close()


def track(
    items: Iterable[T],
    description: str,
    *,
    total: float | None = None,
    unit: str = "",
    stream: IO[str] | None = None,
    mode: str | None = None,
) -> Iterator[T]:
    """Iterate ``items`` with a progress task that advances by one per item."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with progress(description, total=total, unit=unit, stream=stream, mode=mode) as bar:
        for item in items:
            yield item
            bar.advance()
