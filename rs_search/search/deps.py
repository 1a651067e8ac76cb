"""Adapters to the latency cache and the training engine: the only places the search calls them.

Keeping the calls here means the objective and the DDP loop depend on two small protocols
(``LatencySource.figures`` and a train launcher) rather than on the engines' full signatures.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from rs_search.errors import CandidateOutOfMemory, RsSearchError
from rs_search.specs import ArchSpec, Candidate

if TYPE_CHECKING:
    from rs_search.latency.window import Protocol as LatencyProtocol

# Seconds a worker waits for a figure only other hardware can measure (a latency worker on it),
# unless ``$RS_SEARCH_LATENCY_WAIT_S`` (``Environment.latency_wait_s``) says otherwise.
DEFAULT_LATENCY_WAIT_S = 3600.0


class LatencyUnavailable(RsSearchError):
    """The target profile's latency could not be measured for this architecture."""


@dataclass(frozen=True, kw_only=True)
class LatencyFigures:
    median_ms: float
    p90_ms: float
    memory_mb: float
    profile: str


class LatencySource(Protocol):
    def figures(self, arch: ArchSpec) -> LatencyFigures: ...


class CachedLatency:
    """Latency and peak memory from the shared cache table (``rs_search.latency.cache``).

    Which figures count: those taken on the target hardware. When the target names it
    (``target.device_name``), figures from a device of that name, whoever measured them; this
    worker measures only when its own device has that name. When it does not, the hardware is the
    one this worker measures on (``device``: its own GPU for a CUDA target, never GPU 0 by
    default; ``rs_search.latency.backends.measuring_device``). A worker that cannot measure the
    target (a CUDA target seen from a CPU worker) waits up to ``wait_s`` for a latency worker to
    store the figure, and accepts it only while one device holds this profile's figures.

    ``stop`` (the worker's SIGTERM flag) ends a wait with ``TrialInterrupted`` within 0.1 s.
    """

    def __init__(
        self,
        storage: Any,
        target: Mapping[str, Any],
        *,
        device: str,
        protocol: LatencyProtocol | None = None,
        stop: Callable[[], bool] | None = None,
        wait_s: float | None = None,
        poll_s: float = 5.0,
    ) -> None:
        import torch

        from rs_search.latency.backends import measuring_device
        from rs_search.latency.cache import LatencyCache
        from rs_search.latency.profiles import HardwareProfile, device_name
        from rs_search.latency.window import DEFAULT_PROTOCOL

        self._profile = HardwareProfile.from_dict(dict(target))
        self._cache = LatencyCache(storage)
        self._protocol = protocol or DEFAULT_PROTOCOL
        self._stop = stop
        self._wait_s = DEFAULT_LATENCY_WAIT_S if wait_s is None else wait_s
        self._poll_s = poll_s
        self._here = measuring_device(
            self._profile, device, has_cuda=bool(torch.cuda.is_available())
        )
        here_name = None if self._here is None else device_name(self._here)
        pinned = self._profile.device_name
        self._wanted = pinned if pinned is not None else here_name
        self._measures = self._here is not None and (pinned is None or here_name == pinned)

    def figures(self, arch: ArchSpec) -> LatencyFigures:
        from rs_search.latency.cache import wait

        result = self._stored(arch)
        if result is None and self._measures:
            assert self._here is not None
            result = self._cache.get_or_measure(
                arch, self._profile, device=self._here, protocol=self._protocol, stop=self._stop
            )
        deadline = time.monotonic() + self._wait_s
        while result is None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise LatencyUnavailable(
                    f"no latency figure for {arch.label} width {arch.width:g} at "
                    f"{arch.resolution}px on {self._profile.name} "
                    f"({self._wanted or 'its ' + self._profile.device_type + ' hardware'}) after "
                    f"{self._wait_s:.0f}s; this worker cannot measure it: run rs-search "
                    "latency-worker on the target hardware"
                )
            wait(min(self._poll_s, left), self._stop)
            result = self._stored(arch)
        if result.status == "oom":
            raise CandidateOutOfMemory(
                f"does not fit on {self._profile.name} for {self._profile.mode.replace('_', ' ')} "
                f"({result.error or 'out of memory'})"
            )
        if result.status != "ok" or result.median_ms is None:
            raise LatencyUnavailable(f"latency on {self._profile.name}: {result.error}")
        return LatencyFigures(
            median_ms=float(result.median_ms),
            p90_ms=float(result.p90_ms or result.median_ms),
            memory_mb=float(result.peak_memory_mb or 0.0),
            profile=self._profile.name,
        )

    def _stored(self, arch: ArchSpec) -> Any:
        if self._wanted is not None:
            return self._cache.find(arch, self._profile, device_name=self._wanted)
        names = self._cache.device_names(self._profile)
        if len(names) > 1:
            raise LatencyUnavailable(
                f"the latency cache holds {self._profile.name} figures from "
                f"{len(names)} devices ({', '.join(sorted(names))}); name the target hardware "
                "in the space file (target.device_name) so one device's figures are compared"
            )
        if not names:
            return None
        return self._cache.find(arch, self._profile, device_name=names.pop())


@dataclass(frozen=True, kw_only=True)
class LocalTrain:
    """Runs ``rs_search.train.engine.train`` in this process (on the DDP group when one is up)."""

    data: str
    device: str = "auto"
    progress: bool = False
    num_workers: int | None = None
    local_workers: int = 1  # search workers sharing this machine: the loader default divides by it
    micro_batch: int | None = None

    def __call__(
        self,
        candidate: Candidate,
        *,
        out_dir: Path,
        resume: bool,
        seed: int,
        on_epoch: Callable[[Any], bool] | None,
        should_stop: Callable[[], bool],
    ) -> Any:
        from rs_search.train.engine import RunOptions, train

        options = RunOptions(
            data=self.data,
            device=self.device,
            out_dir=out_dir,
            resume=resume,
            progress=self.progress,
            seed=seed,
            num_workers=self.num_workers,
            local_workers=self.local_workers,
            micro_batch=self.micro_batch,
        )
        return train(candidate, options, on_epoch=on_epoch, should_stop=should_stop)
