"""The latency worker: fills the cache for a study on the hardware it runs on (issue 4).

A study may train on one machine and deploy on another; ``rs-search latency-worker`` runs on the
deployment hardware, reads every architecture of the study (trial user attribute ``arch``, trials
of any state, enqueued ones included) and measures those that lack a figure for its profile on
its device. Each measurement is claimed first (``LatencyCache.try_claim``: an INSERT the table's
unique key makes atomic), so any number of workers on one study measure every architecture once.

Stopping: SIGTERM or Ctrl-C ends the worker cleanly. A measurement in progress is abandoned and
its claim released (deleted), so another worker can take it at once; nothing half-written stays.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from rs_search.errors import RsSearchError
from rs_search.latency.cache import Heartbeat, LatencyCache, default_worker_id
from rs_search.latency.measure import DEFAULT_PROTOCOL, Protocol, measure
from rs_search.latency.profiles import HardwareProfile, get_profile
from rs_search.latency.result import LatencyResult
from rs_search.specs import ArchSpec
from rs_search.study import attrs
from rs_search.study.read import study_records, target_of


class WorkerInterrupted(BaseException):
    """Raised inside a measurement by the SIGTERM/SIGINT handler (a BaseException, like
    KeyboardInterrupt, so that no `except Exception` on the way turns it into a figure)."""


@dataclass
class WorkerStats:
    measured: list[str] = field(default_factory=list)  # arch keys this worker measured
    by_status: dict[str, int] = field(default_factory=dict)
    interrupted: bool = False


def arch_label(arch: ArchSpec) -> str:
    """``2-2-2-2 w0.25 r32`` (``50 w1 r160`` for a published layout)."""
    return arch.short_label


def load_study(study_name: str, storage: str | None, *, retry_seconds: float | None = None) -> Any:
    """The Optuna study, through the study layer's storage (retries, one clear line with the
    URL masked when the database or the study is missing; nothing is created)."""
    from rs_search.study.storage import open_study

    return open_study(study_name, storage, retry_seconds=retry_seconds).study


def study_architectures(study: Any, *, warn: Callable[[str], None] | None = None) -> list[ArchSpec]:
    """Distinct architectures of the study's trials (any state, queued proposals included), in
    trial order."""
    seen: dict[str, ArchSpec] = {}
    for record in study_records(study):
        if attrs.ARCH in record.problems and warn is not None:
            warn(f"skipping trial {record.number}: {record.problems[attrs.ARCH]}")
        if record.arch is not None:
            seen.setdefault(record.arch.key(), record.arch)
    return list(seen.values())


def study_profile(study: Any, hardware: str | None) -> HardwareProfile:
    """``--hardware NAME`` (built-in or the study's own target), else the study's target."""
    extra: dict[str, HardwareProfile] = {}
    target = target_of(study)
    if target:
        profile = HardwareProfile.from_dict(target, where=f"study {study.study_name!r}: target")
        extra[profile.name] = profile
    if hardware is not None:
        return get_profile(hardware, extra=extra)
    if not extra:
        raise RsSearchError(
            f"study {study.study_name!r} names no target hardware; give --hardware NAME"
        )
    return next(iter(extra.values()))


class LatencyWorker:
    """Measures every architecture of ``study`` lacking a figure for ``profile`` on this device."""

    def __init__(
        self,
        *,
        study: Any,
        cache: LatencyCache,
        profile: HardwareProfile,
        poll_s: float = 10.0,
        once: bool = False,
        worker_id: str | None = None,
        protocol: Protocol | None = None,
        echo: Callable[[str], None] = print,
    ) -> None:
        self.study = study
        self.cache = cache
        self.profile = profile
        self.poll_s = poll_s
        self.once = once
        self.worker_id = worker_id or default_worker_id()
        self.protocol = protocol
        self.echo = echo
        self.stats = WorkerStats()
        self._stop = threading.Event()
        self._measuring = False
        self._warned: set[str] = set()

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> WorkerStats:
        idle_said = False
        while not self._stop.is_set():
            archs = study_architectures(self.study, warn=self._warn_once)
            done = self.cache.done_keys(self.profile)
            todo = [a for a in archs if a.key() not in done]
            progressed = False
            for arch in todo:
                if self._stop.is_set():
                    break
                claim = self.cache.try_claim(arch, self.profile, self.worker_id)
                if claim is None:
                    continue  # measured meanwhile, or another worker holds it
                idle_said = False
                progressed = True
                result = self._measure_claimed(claim, arch)
                if result is None:  # interrupted
                    return self.stats
                done.add(arch.key())
                self._report(
                    arch, result, done=sum(a.key() in done for a in archs), total=len(archs)
                )
            if self.once and not progressed:
                done = self.cache.done_keys(self.profile)
                left = sum(a.key() not in done for a in archs)
                if left:
                    self.echo(
                        f"nothing left to claim: {left} of {len(archs)} architectures are "
                        "being measured by other workers"
                    )
                else:
                    self.echo(
                        f"done: all {len(archs)} architectures have a figure for "
                        f"{self.profile.name}"
                    )
                break
            if not progressed:
                if not idle_said:
                    self.echo(f"waiting for new architectures (polling every {self.poll_s:g} s)")
                    idle_said = True
                self._stop.wait(self.poll_s)
        return self.stats

    def _warn_once(self, message: str) -> None:
        if message not in self._warned:  # the study is re-read every poll
            self._warned.add(message)
            self.echo(message)

    def _measure_claimed(self, claim: Any, arch: ArchSpec) -> LatencyResult | None:
        self.echo(f"measuring {arch_label(arch)} [{arch.key()}] on {self.profile.name}")
        try:
            self._measuring = True
            try:
                with Heartbeat(self.cache, claim):
                    result = measure(
                        arch,
                        self.profile,
                        device=self.profile.device,
                        protocol=self.protocol or DEFAULT_PROTOCOL,
                    )
            finally:
                self._measuring = False
        except (WorkerInterrupted, KeyboardInterrupt):
            self.cache.release(claim)
            self.stats.interrupted = True
            self.echo(f"interrupted: released {arch_label(arch)} [{arch.key()}] unmeasured")
            return None
        except BaseException:
            self.cache.release(claim)
            raise
        if not self.cache.complete(claim, result):
            self.echo(f"claim on {arch.key()} was taken over meanwhile; storing the figure anyway")
            self.cache.put(arch, self.profile, result)
        self.stats.measured.append(arch.key())
        self.stats.by_status[result.status] = self.stats.by_status.get(result.status, 0) + 1
        return result

    def _report(self, arch: ArchSpec, result: LatencyResult, *, done: int, total: int) -> None:
        self.echo(f"[{done}/{total}] {arch_label(arch)} [{arch.key()}]: {result.summary()}")

    @contextmanager
    def signals(self) -> Iterator[None]:
        """SIGTERM and SIGINT stop the worker: between measurements at once, during one by
        abandoning it (the claim is released)."""

        def handler(signum: int, frame: FrameType | None) -> None:
            self._stop.set()
            if self._measuring:
                self._measuring = False  # raise once, not again from the cleanup
                raise WorkerInterrupted(signal.Signals(signum).name)

        previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)
