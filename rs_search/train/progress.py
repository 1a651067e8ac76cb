"""Per-epoch progress display: a rich progress bar on a terminal, plain lines otherwise (logs,
CI, pipes), nothing when switched off. Written to stderr; rank 0 only."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, TextIO

if TYPE_CHECKING:
    from rich.progress import TaskID

__all__ = ["PLAIN_EVERY_S", "EpochProgress", "make_progress"]

# Project heuristic: in a log, a long epoch shows a step line at most this often, so that a
# user tailing it sees the run move without the log growing by a line per step.
PLAIN_EVERY_S = 30.0


class EpochProgress(Protocol):
    def start_epoch(self, epoch: int, epochs: int, steps: int, done: int = 0) -> None: ...

    def update(self, step: int, *, images_per_s: float, loss: float, top1: float) -> None: ...

    def end_epoch(self, line: str) -> None: ...

    def close(self) -> None: ...


class _Null:
    def start_epoch(self, epoch: int, epochs: int, steps: int, done: int = 0) -> None:
        pass

    def update(self, step: int, *, images_per_s: float, loss: float, top1: float) -> None:
        pass

    def end_epoch(self, line: str) -> None:
        pass

    def close(self) -> None:
        pass


class _Plain(_Null):
    """Lines for a log file, no control characters: a step line at an epoch's first progress
    update (its first step on CPU; the engine updates every ``check_every`` steps), including
    the first of the rest of an epoch after a mid-epoch resume, further step lines at most every
    ``every_s`` seconds within the epoch, and the line of each finished epoch.

    The first step's line is also the moment a run is known to be inside that epoch: the
    signal tests wait for it on the pipe instead of sleeping."""

    def __init__(
        self,
        stream: TextIO,
        *,
        every_s: float = PLAIN_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream
        self.every_s = every_s
        self.clock = clock
        self.label = ""
        self.steps = 0
        self.last: float | None = None  # when the epoch's last step line was printed

    def start_epoch(self, epoch: int, epochs: int, steps: int, done: int = 0) -> None:
        self.label = f"epoch {epoch}/{epochs}"
        self.steps = steps
        self.last = None

    def update(self, step: int, *, images_per_s: float, loss: float, top1: float) -> None:
        now = self.clock()
        if self.last is not None and now - self.last < self.every_s:
            return
        self.last = now
        print(
            f"{self.label}: step {step}/{self.steps}, {images_per_s:.1f} img/s, "
            f"loss {loss:.4f}, top-1 {top1:.1f}%",
            file=self.stream,
            flush=True,
        )

    def end_epoch(self, line: str) -> None:
        print(line, file=self.stream, flush=True)


class _Rich:
    """A bar per epoch with batches done, images/s, running loss and top-1, then the epoch line."""

    def __init__(self, stream: TextIO) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self.console = Console(file=stream)
        self.bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
        )
        self.task: TaskID | None = None
        self.bar.start()

    def start_epoch(self, epoch: int, epochs: int, steps: int, done: int = 0) -> None:
        if self.task is not None:
            self.bar.remove_task(self.task)
        self.task = self.bar.add_task(
            f"epoch {epoch}/{epochs}", total=steps, completed=done, stats=""
        )

    def update(self, step: int, *, images_per_s: float, loss: float, top1: float) -> None:
        if self.task is not None:
            stats = f"{images_per_s:7.1f} img/s  loss {loss:.4f}  top-1 {top1:5.1f}%"
            self.bar.update(self.task, completed=step, stats=stats)

    def end_epoch(self, line: str) -> None:
        self.bar.console.print(line, highlight=False, markup=False)

    def close(self) -> None:
        self.bar.stop()


def make_progress(enabled: bool, stream: TextIO | None = None) -> EpochProgress:
    """Rich bar when ``stream`` (default stderr) is a terminal, plain lines otherwise."""
    stream = stream or sys.stderr
    if not enabled:
        return _Null()
    if stream.isatty():
        return _Rich(stream)
    return _Plain(stream)
