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

from rs_search.errors import RsSearchError, SpecError, StorageError
from rs_search.latency.cache import Heartbeat, LatencyCache, default_worker_id
from rs_search.latency.measure import DEFAULT_PROTOCOL, Protocol, measure
from rs_search.latency.profiles import HardwareProfile, get_profile
from rs_search.latency.result import LatencyResult
from rs_search.specs import ArchSpec
from rs_search.storage.engine import engine_kwargs
from rs_search.storage.url import mask_url, resolve_storage_url

ARCH_ATTR = "arch"  # trial user attribute: ArchSpec.to_dict() (the search's contract)
TARGET_ATTR = "target"  # study user attribute: the space's target profile dict


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
    return f"{arch.label} w{arch.width:g} r{arch.resolution}"


def load_study(study_name: str, storage: str | None) -> Any:
    """The Optuna study, or a ``StorageError`` naming the URL (masked) and the studies there."""
    import optuna

    url = resolve_storage_url(storage)
    try:
        rdb = optuna.storages.RDBStorage(
            url.render_as_string(hide_password=False),
            engine_kwargs=engine_kwargs(url),
            skip_table_creation=True,
        )
        return optuna.load_study(study_name=study_name, storage=rdb)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(rdb)]
        raise StorageError(
            f"no study {study_name!r} in {mask_url(url)}; studies there: "
            f"{', '.join(names) or 'none'}"
        ) from None
    except Exception as exc:  # noqa: BLE001 - driver errors arrive in several types
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if url.password:
            reason = reason.replace(str(url.password), "***")
        raise StorageError(
            f"cannot open study {study_name!r} in {mask_url(url)}: {reason}"
        ) from None


def study_architectures(study: Any, *, warn: Callable[[str], None] | None = None) -> list[ArchSpec]:
    """Distinct architectures of the study's trials (any state), in trial order."""
    seen: dict[str, ArchSpec] = {}
    for trial in study.get_trials(deepcopy=False):
        data = trial.user_attrs.get(ARCH_ATTR)
        if data is None:
            continue
        try:
            arch = ArchSpec.from_dict(data)
        except SpecError as exc:
            if warn is not None:
                warn(f"skipping trial {trial.number}: {exc}")
            continue
        seen.setdefault(arch.key(), arch)
    return list(seen.values())


def study_profile(study: Any, hardware: str | None) -> HardwareProfile:
    """``--hardware NAME`` (built-in or the study's own target), else the study's target."""
    extra: dict[str, HardwareProfile] = {}
    target = study.user_attrs.get(TARGET_ATTR)
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
