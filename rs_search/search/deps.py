"""Adapters to the latency cache and the training engine: the only places the search calls them.

Keeping the calls here means the objective and the DDP loop depend on two small protocols
(``LatencySource.figures`` and a train launcher) rather than on the engines' full signatures.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from rs_search.errors import CandidateOutOfMemory, RsSearchError
from rs_search.specs import ArchSpec, Candidate

ENV_LATENCY_WAIT = "RS_SEARCH_LATENCY_WAIT_S"


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

    A figure already in the table for the target profile is used whichever machine measured it
    (a latency worker on the deployment hardware may have filled it). Otherwise, when this
    machine has the target's device type, the figure is measured here under the cache's claim
    (so concurrent workers measure an architecture once); when it does not (a CUDA target seen
    from a CPU worker), the worker waits up to ``wait_s`` for a latency worker to store it.
    """

    def __init__(
        self,
        storage: Any,
        target: Mapping[str, Any],
        *,
        wait_s: float | None = None,
        poll_s: float = 5.0,
    ) -> None:
        from rs_search.latency.cache import LatencyCache
        from rs_search.latency.profiles import HardwareProfile

        self._profile = HardwareProfile.from_dict(dict(target))
        self._cache = LatencyCache(storage)
        env = os.environ.get(ENV_LATENCY_WAIT)
        self._wait_s = wait_s if wait_s is not None else float(env) if env else 3600.0
        self._poll_s = poll_s

    def _local(self) -> bool:
        if self._profile.device_type == "cpu":
            return True
        import torch

        return bool(torch.cuda.is_available())

    def figures(self, arch: ArchSpec) -> LatencyFigures:
        result = self._cache.get(arch, self._profile, any_device=True)
        if result is None and self._local():
            result = self._cache.get_or_measure(arch, self._profile)
        deadline = time.monotonic() + self._wait_s
        while result is None:
            if time.monotonic() >= deadline:
                raise LatencyUnavailable(
                    f"no latency figure for {arch.label} width {arch.width:g} at "
                    f"{arch.resolution}px on {self._profile.name} after {self._wait_s:.0f}s; this "
                    f"machine has no {self._profile.device_type} device: run rs-search "
                    "latency-worker on the target hardware"
                )
            time.sleep(self._poll_s)
            result = self._cache.get(arch, self._profile, any_device=True)
        if result.status == "oom":
            raise CandidateOutOfMemory(
                f"does not fit on {self._profile.name} for inference "
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
