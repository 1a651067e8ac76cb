"""What the latency cache adds to a study's own figures (the study itself is read through
``rs_search.study``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy.engine import URL


@dataclass(frozen=True, kw_only=True)
class CachedMeasurements:
    """What the latency cache (``rs_latency``) adds to the trials' own figures."""

    latency_by_profile: dict[str, dict[str, float]]  # profile name -> arch key -> median ms
    memory_by_arch: dict[str, float]  # arch key -> peak inference memory MB on the target


def cached_measurements(url: URL, *, target: str) -> CachedMeasurements:
    """Median latency of every cached architecture on every profile the cache holds (a study
    trains on one machine; latency workers on the deployment hardware fill in the others,
    Bello et al. 2021, Sec. 7.4), and peak memory on the study's target profile. Reads through
    ``rs_search.export.latency`` (the figure export writes) and never creates tables."""
    from rs_search.export.latency import read_cached_latency

    figures, _ = read_cached_latency(url.render_as_string(hide_password=False))
    latency: dict[str, dict[str, float]] = {}
    memory: dict[str, float] = {}
    for arch_key, by_profile in figures.items():
        for profile, figure in by_profile.items():
            if figure.get("status") != "ok" or figure.get("median_ms") is None:
                continue
            latency.setdefault(profile, {})[arch_key] = float(figure["median_ms"])
            if profile == target and figure.get("peak_memory_mb") is not None:
                memory[arch_key] = float(figure["peak_memory_mb"])
    return CachedMeasurements(latency_by_profile=latency, memory_by_arch=memory)
