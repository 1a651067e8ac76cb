"""Latency per hardware for an export: every figure the latency cache holds for an architecture.

The cache (``rs_latency`` in the study's database, ``rs_search.latency.cache``) may hold figures
for several hardware profiles, measured by the search's workers or by latency workers on the
deployment hardware (Bello et al. 2021, Sec. 7.4: measure on the hardware that will run it). The
export records all of them; ``--hardware NAME`` makes sure a profile appears, as "not measured"
with the command that measures it when the cache has no figure. Reading never creates tables.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["LatencyFigures", "read_cached_latency"]

_FIELDS = (
    "median_ms",
    "p90_ms",
    "spread",
    "peak_memory_mb",
    "batch_size",
    "threads",
    "device_name",
    "torch_version",
    "measured_at",
    "stable",
)

LatencyFigures = dict[str, dict[str, dict[str, Any]]]  # arch key -> profile name -> figures


def read_cached_latency(
    storage_url: str, hardware: Sequence[Any] = ()
) -> tuple[LatencyFigures, dict[str, str]]:
    """(figures by arch key and profile name, profile key -> name for ``hardware`` profiles).

    Per (arch, profile) the stable figure measured last wins, else the last one. Figures with
    status other than ``ok`` are recorded with their status and error.
    """
    from sqlalchemy import inspect

    from rs_search.storage.engine import make_engine

    wanted = {p.key(): p.name for p in hardware}
    engine = make_engine(storage_url)
    try:
        if not inspect(engine).has_table("rs_latency"):
            return {}, wanted
        from rs_search.latency.cache import LatencyCache

        results = LatencyCache(engine).results()
    finally:
        engine.dispose()
    out: LatencyFigures = {}
    chosen: dict[tuple[str, str], Any] = {}
    for r in results:  # oldest first
        name = wanted.get(r.profile_key, r.profile_name)
        slot = (r.arch_key, name)
        previous = chosen.get(slot)
        if previous is None or r.stable or not previous.stable:
            chosen[slot] = r
    for (arch_key, name), r in chosen.items():
        figures: dict[str, Any] = {"status": r.status}
        figures.update({f: getattr(r, f) for f in _FIELDS if getattr(r, f, None) is not None})
        if r.error:
            figures["error"] = r.error
        figures["source"] = "latency cache"
        out.setdefault(arch_key, {})[name] = figures
    return out, wanted


def figures_for(
    arch_key: str,
    cached: Mapping[str, Mapping[str, Mapping[str, Any]]],
    hardware_names: Sequence[str],
    *,
    study: str,
) -> dict[str, dict[str, Any]]:
    """Every cached profile's figures for ``arch_key``, plus a "not measured" entry for each
    ``hardware_names`` profile the cache lacks."""
    found = {name: dict(f) for name, f in cached.get(arch_key, {}).items()}
    for name in hardware_names:
        found.setdefault(
            name,
            {
                "status": "not measured",
                "hint": f"on that hardware: rs-search latency-worker --study {study} --hardware "
                f"{name} --once; then export again",
            },
        )
    return found
