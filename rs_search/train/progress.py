"""Per-epoch progress display: a rich progress bar on a terminal, one plain line per epoch
otherwise (logs, CI, pipes), nothing when switched off. Written to stderr; rank 0 only."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Protocol, TextIO

if TYPE_CHECKING:
    from rich.progress import TaskID

__all__ = ["EpochProgress", "make_progress"]


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
    """One line per finished epoch: readable in a log file, no control characters."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

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
