"""Build a benchmark table: train every candidate to the full budget, measure it, record it.

A thin orchestration over pure parts (``grid``, ``table``) and the project's engines: the
training engine (``_train``, the one call to it), the latency cache on the space's target
profile, and the complexity counters. Crash safety comes from three facts:

- the table file is rewritten whole through a rename after every candidate, so it always holds
  every finished candidate and never half of one (``table.write_table``);
- each candidate trains in its own folder under the work directory with the engine's per-epoch
  checkpoints and ``resume=True``, so a killed run continues the interrupted candidate from its
  last epoch (or step, after SIGTERM/SIGINT) and never retrains a recorded one;
- latency figures go through the latency cache (a SQLite file in the work directory unless a
  storage URL is given), so a figure measured before a crash is not measured again.

A second process on the same table is refused (an exclusive lock on the work directory) rather
than training the same candidates twice. A candidate whose training diverges or runs out of
memory (or that does not fit the target for inference) is recorded as ``failed`` with the reason,
as a search trial would fail, and is not retried.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from rs_search import __version__
from rs_search.bench.grid import draw_grid
from rs_search.bench.table import (
    Curve,
    Entry,
    Header,
    Latency,
    Table,
    TableError,
    TrainInfo,
    load_table,
    write_table,
)
from rs_search.errors import CandidateOutOfMemory, RsSearchError, TrainingDiverged
from rs_search.space import SearchSpace
from rs_search.specs import ArchSpec, Candidate

if TYPE_CHECKING:
    from rs_search.latency.result import LatencyResult
    from rs_search.latency.window import Protocol as LatencyProtocol

__all__ = [
    "BuildListener",
    "TableInterrupted",
    "build_table",
    "default_work_dir",
    "plan_table",
    "table_lock",
]

LATENCY_DB = "latency.db"
_LOCK = ".lock"


class TableInterrupted(RsSearchError):
    """SIGINT/SIGTERM stopped the build; the table and checkpoints let a rerun continue."""

    exit_code = 130


class BuildListener(Protocol):
    """What the caller (the CLI's progress display) hears about; every method may do nothing."""

    def started(self, entry: Entry, position: int, total: int) -> None: ...
    def resumed(self, entry: Entry, epochs_done: int) -> None: ...
    def epoch(self, entry: Entry, row: dict[str, Any]) -> None: ...
    def recorded(self, entry: Entry, position: int, total: int) -> None: ...


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def default_work_dir(out: Path) -> Path:
    """``runs/digits.jsonl`` -> ``runs/digits.jsonl.work`` (checkpoints, the latency cache)."""
    return out.with_name(out.name + ".work")


# ---------------------------------------------------------------------------------- the plan


def plan_table(
    *,
    space: SearchSpace,
    data: str,
    budget: int,
    candidates: int,
    seed: int,
    out: Path,
    device: str,
) -> tuple[Table, bool]:
    """The table to build: the one at ``out`` when it exists and was made with the same space,
    data, budget, seed, candidate count and target profile (resume), else a new one with every
    candidate pending. Returns (table, resumed). A table made with other settings is an error:
    continuing it would mix two benchmarks in one file."""
    from rs_search.latency.profiles import HardwareProfile, device_name, torch_version

    profile = HardwareProfile.from_dict(space.target.to_dict())
    header = Header(
        space=space,
        data=data,
        budget_epochs=budget,
        seed=seed,
        grid_mode="all",
        grid_requested=candidates,
        grid_distinct=None,
        profile=profile.to_dict(),
        profile_key=profile.key(),
        device_name=device_name(profile.device),
        train_device=_train_device_name(device),
        versions={
            "rs_search": __version__,
            "torch": torch_version(),
            "python": sys.version.split()[0],
        },
        created_at=_now(),
        updated_at=_now(),
    )
    if out.exists():
        existing = load_table(out)
        mine, theirs = header.identity(), existing.header.identity()
        differ = [
            f"{k} {theirs[k]} (this command: {mine[k]})" for k in mine if mine[k] != theirs[k]
        ]
        if differ:
            raise TableError(
                f"{out} holds a table made with other settings: {'; '.join(differ)}; rerun with "
                "the same flags to continue it, or choose another --out"
            )
        return existing, True
    grid = draw_grid(space, epochs=budget, n=candidates, seed=seed)
    header = replace(header, grid_mode=grid.mode, grid_distinct=grid.distinct)
    return Table(header=header, entries=tuple(Entry(candidate=c) for c in grid.candidates)), False


def _train_device_name(device: str) -> str:
    from rs_search.devices import resolve
    from rs_search.latency.profiles import device_name

    return device_name(str(resolve(device)))


# ---------------------------------------------------------------------------------- the build


@dataclass
class _Clock:
    """Seconds spent by this process, added to what the table already records."""

    base: dict[str, float]
    started: float
    train: float = 0.0
    latency: float = 0.0

    def totals(self) -> dict[str, float]:
        return {
            "train": self.base["train"] + self.train,
            "latency": self.base["latency"] + self.latency,
            "wall": self.base["wall"] + time.monotonic() - self.started,
        }


def build_table(
    table: Table,
    *,
    out: Path,
    work: Path,
    device: str = "auto",
    storage: str | None = None,
    listener: BuildListener | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    protocol: LatencyProtocol | None = None,
) -> Table:
    """Train, measure and record every pending candidate of ``table``, writing ``out`` after each
    (call it inside ``table_lock``). Returns the finished table. ``should_stop`` (polled
    between steps) checkpoints the running candidate and raises ``TableInterrupted``; rerunning
    continues it."""
    import torch

    from rs_search.latency.backends import measuring_device
    from rs_search.latency.cache import LatencyCache
    from rs_search.latency.profiles import HardwareProfile
    from rs_search.latency.window import DEFAULT_PROTOCOL

    listener = listener or _Silent()
    profile = HardwareProfile.from_dict(dict(table.header.profile))
    # The target is timed on this machine's device of its type (the training device's GPU for a
    # CUDA target, as a search worker does), never on a GPU another process may be training on.
    timing_device = measuring_device(profile, device, has_cuda=torch.cuda.is_available())
    if timing_device is None:
        raise RsSearchError(
            f"the space's target profile {profile.name} runs on CUDA and this machine (or "
            f"--device {device}) has none: build the table on the target hardware"
        )
    work.mkdir(parents=True, exist_ok=True)
    clock = _Clock(base=dict(table.header.seconds), started=time.monotonic())
    write_table(out, _stamped(table, clock))
    cache = LatencyCache(storage or f"sqlite:///{(work / LATENCY_DB).resolve()}")

    def measure(arch: ArchSpec) -> LatencyResult:
        return cache.get_or_measure(
            arch,
            profile,
            device=timing_device,
            protocol=protocol or DEFAULT_PROTOCOL,
            stop=should_stop,
        )

    try:
        pending = [e for e in table.entries if e.status == "pending"]
        for position, entry in enumerate(pending, start=1):
            if should_stop():
                raise _interrupted(out, table)
            listener.started(entry, position, len(pending))
            done = _one(
                entry,
                header=table.header,
                measure=measure,
                folder=work / entry.key,
                device=device,
                clock=clock,
                listener=listener,
                should_stop=should_stop,
            )
            table = table.with_entry(done)
            write_table(out, _stamped(table, clock))
            shutil.rmtree(work / entry.key, ignore_errors=True)
            listener.recorded(done, position, len(pending))
    except TableInterrupted:
        write_table(out, _stamped(table, clock))  # the time spent counts in "seconds"
        raise
    finally:
        cache.close()
    table = _stamped(table, clock)  # the caller's summary reads the time spent from it
    write_table(out, table)
    if storage is None and table.complete:
        # The figures are in the table now; the lock file goes last (``table_lock`` holds it).
        for path in work.iterdir():
            if path.name != _LOCK:
                shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    return table


def _stamped(table: Table, clock: _Clock) -> Table:
    return replace(table, header=replace(table.header, updated_at=_now(), seconds=clock.totals()))


def _interrupted(out: Path, table: Table) -> TableInterrupted:
    done = sum(e.status != "pending" for e in table.entries)
    return TableInterrupted(
        f"stopped; {done} of {len(table.entries)} candidates are recorded in {out} and the "
        "running one is checkpointed: run the same command again to continue"
    )


@contextlib.contextmanager
def table_lock(work: Path, out: Path) -> Iterator[None]:
    """Hold the exclusive right to build ``out`` (plan and build under it): a second process
    gets a ``TableError`` naming the holder instead of training the same candidates again. The
    kernel drops the lock when its holder dies, however it dies. It is a POSIX record lock
    (``lockf``), owned by this process alone: a ``flock`` would be shared with the forked
    loader processes, which outlive a killed builder by seconds and would refuse the rerun.
    An empty work directory is removed on the way out (a complete table leaves nothing
    behind)."""
    try:
        work.mkdir(parents=True, exist_ok=True)
        handle = open(work / _LOCK, "a+")  # noqa: SIM115 - held for the whole build
    except OSError as exc:
        raise TableError(f"{work}: cannot create the work folder ({exc.strerror or exc})") from None
    try:
        try:
            fcntl.lockf(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EACCES, errno.EAGAIN):  # held elsewhere: these two
                raise TableError(f"{work}: cannot lock the work folder ({exc.strerror})") from None
            handle.seek(0)
            holder = handle.read().strip()[:40] or "another process"
            raise TableError(
                f"{out} is being built by {holder}; wait for it, or stop it and rerun"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        try:
            yield
        finally:
            if [p.name for p in work.iterdir()] == [_LOCK]:
                (work / _LOCK).unlink()
                work.rmdir()
    finally:
        handle.close()


def _one(
    entry: Entry,
    *,
    header: Header,
    measure: Callable[[ArchSpec], LatencyResult],
    folder: Path,
    device: str,
    clock: _Clock,
    listener: BuildListener,
    should_stop: Callable[[], bool],
) -> Entry:
    """One candidate: size, latency on the target, then training to the full budget."""
    from rs_search.errors import TrialInterrupted
    from rs_search.models.complexity import complexity

    arch = entry.candidate.arch
    size = complexity(arch)
    entry = replace(entry, params=size.params, flops=size.flops)
    started = time.monotonic()
    try:
        figure = measure(arch)
    except TrialInterrupted:
        raise TableInterrupted(
            f"stopped while timing {entry.label}; run the same command again to continue"
        ) from None
    clock.latency += time.monotonic() - started
    if figure.status != "ok" or figure.median_ms is None:
        why = figure.error or ("does not fit" if figure.status == "oom" else figure.status)
        return replace(entry, status="failed", stage="latency", error=f"latency: {why}")
    latency = Latency(
        median_ms=float(figure.median_ms),
        p90_ms=float(figure.p90_ms or figure.median_ms),
        spread=figure.spread,
        memory_mb=figure.peak_memory_mb,
        stable=bool(figure.stable),
    )
    fresh = 0  # epochs trained by this process: the rest came from a checkpoint

    def on_epoch(metrics: Any) -> bool:
        nonlocal fresh
        row = metrics.to_dict()
        if fresh == 0 and int(row["epoch"]) > 1:
            listener.resumed(entry, int(row["epoch"]) - 1)
        fresh += 1
        listener.epoch(entry, row)
        return True

    from rs_search.train.checkpoint import checkpoint_paths

    resuming = folder.is_dir() and bool(checkpoint_paths(folder))
    started = time.monotonic()
    try:
        result = _train(
            entry.candidate,
            data=header.data,
            device=device,
            out_dir=folder,
            seed=header.seed,
            on_epoch=on_epoch,
            should_stop=should_stop,
        )
    except TrialInterrupted:
        raise TableInterrupted(
            f"stopped while training {entry.label}; it is checkpointed in {folder}: run the "
            "same command again to continue"
        ) from None
    except (TrainingDiverged, CandidateOutOfMemory) as exc:
        return replace(entry, latency=latency, status="failed", stage="train", error=str(exc))
    finally:
        clock.train += time.monotonic() - started
    rows = [m.to_dict() for m in result.curve]
    if len(rows) != header.budget_epochs:
        raise RsSearchError(
            f"training {entry.label} returned {len(rows)} epochs of {header.budget_epochs}"
        )
    curve = Curve.from_rows(rows)
    resumed = len(rows) - fresh if resuming else None  # 0: resumed inside epoch 1
    return replace(
        entry,
        status="done",
        latency=latency,
        curve=curve,
        train=TrainInfo(
            seed=header.seed,
            seconds=sum(curve.epoch_seconds),
            resumed_from_epoch=resumed,
            finished_at=_now(),
        ),
    )


def _train(
    candidate: Candidate,
    *,
    data: str,
    device: str,
    out_dir: Path,
    seed: int,
    on_epoch: Callable[[Any], bool],
    should_stop: Callable[[], bool],
) -> Any:
    """The one call of the training engine. ``resume=True`` on an empty folder is a fresh
    start."""
    from rs_search.train.engine import RunOptions, train

    options = RunOptions(
        data=data, device=device, out_dir=out_dir, resume=True, progress=False, seed=seed
    )
    return train(candidate, options, on_epoch=on_epoch, should_stop=should_stop)


class _Silent:
    def started(self, entry: Entry, position: int, total: int) -> None:
        pass

    def resumed(self, entry: Entry, epochs_done: int) -> None:
        pass

    def epoch(self, entry: Entry, row: dict[str, Any]) -> None:
        pass

    def recorded(self, entry: Entry, position: int, total: int) -> None:
        pass
