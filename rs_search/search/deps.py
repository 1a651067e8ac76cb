"""Adapters to the latency cache and the training engine: the only places the search calls them.

Keeping the calls here means the objective and the DDP loop depend on two small protocols
(``LatencySource.figures`` and a train launcher) rather than on the engines' full signatures.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from rs_search.errors import CandidateOutOfMemory, RsSearchError
from rs_search.specs import ArchSpec, Candidate


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
    """Latency and peak memory from the shared cache table, measured here on a miss."""

    def __init__(self, storage_url: str, target: Mapping[str, Any]) -> None:
        from rs_search.latency.profiles import HardwareProfile

        self._profile = HardwareProfile.from_dict(dict(target))
        self._measure: Callable[[ArchSpec, Any], Any]
        try:
            from rs_search.latency import LatencyCache  # type: ignore[attr-defined]
        except ImportError:  # the cache has not landed: measure every time
            from rs_search.latency.measure import measure

            self._measure = measure
        else:
            self._measure = LatencyCache(storage_url).get_or_measure

    def figures(self, arch: ArchSpec) -> LatencyFigures:
        result = self._measure(arch, self._profile)
        status = getattr(result, "status", "ok")
        if status == "oom":
            raise CandidateOutOfMemory(f"does not fit on {self._profile.name} for inference")
        if status != "ok":
            detail = getattr(result, "error", None) or getattr(result, "message", None) or status
            raise LatencyUnavailable(f"latency on {self._profile.name}: {detail}")
        return LatencyFigures(median_ms=float(result.median_ms), p90_ms=float(result.p90_ms),
                              memory_mb=float(result.peak_memory_mb), profile=self._profile.name)


@dataclass(frozen=True, kw_only=True)
class LocalTrain:
    """Runs ``rs_search.train.engine.train`` in this process (on the DDP group when one is up)."""

    data: str
    device: str = "auto"
    progress: bool = False
    num_workers: int | None = None

    def __call__(self, candidate: Candidate, *, out_dir: Path, resume: bool, seed: int,
                 on_epoch: Callable[[Any], bool] | None, should_stop: Callable[[], bool]) -> Any:
        from rs_search.train.engine import train

        return train(candidate, data=self.data, device=self.device, out_dir=out_dir,
                     resume=resume, on_epoch=on_epoch, should_stop=should_stop,
                     progress=self.progress, seed=seed, num_workers=self.num_workers)
