"""Measure a finished table's latencies again, on a quiet machine.

A table's training curves do not depend on how busy the machine was (one thread, seeded: the same
numbers at any load), but its latency figures do: on a shared 2-core machine every figure taken
while other work ran was flagged unstable, and an 8 px net measured slower than a 32 px one
(benchmarks/RESULTS.md, "Search quality on a table"). ``retime_table`` keeps the curves and
replaces every done candidate's latency with a figure taken now, by the latency module's protocol
on the table's target profile, so a table can be trained under load and timed when the machine is
quiet. Each architecture is timed once (candidates that differ only in their recipe share it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from rs_search.bench.table import Latency, Table
from rs_search.errors import RsSearchError

if TYPE_CHECKING:
    from rs_search.latency.window import Protocol as LatencyProtocol
    from rs_search.specs import ArchSpec


def retime_table(
    table: Table,
    *,
    storage: str,
    device: str = "auto",
    protocol: LatencyProtocol | None = None,
    on_figure: Callable[[str, Latency], None] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> Table:
    """``table`` with the latency of every done candidate measured again into the latency cache
    at ``storage`` (a fresh one for fresh figures: a cached figure is reused, not retaken)."""
    import torch

    from rs_search.latency.backends import measuring_device
    from rs_search.latency.cache import LatencyCache
    from rs_search.latency.profiles import HardwareProfile, device_name
    from rs_search.latency.window import DEFAULT_PROTOCOL

    profile = HardwareProfile.from_dict(dict(table.header.profile))
    timing_device = measuring_device(profile, device, has_cuda=torch.cuda.is_available())
    if timing_device is None:
        raise RsSearchError(
            f"the table's target profile {profile.name} runs on CUDA and this machine has none"
        )
    cache = LatencyCache(storage)
    figures: dict[str, Latency] = {}
    try:

        def figure(arch: ArchSpec) -> Latency:
            key = arch.key()
            if key not in figures:
                result = cache.get_or_measure(
                    arch,
                    profile,
                    device=timing_device,
                    protocol=protocol or DEFAULT_PROTOCOL,
                    stop=should_stop,
                )
                if result.status != "ok" or result.median_ms is None:
                    raise RsSearchError(f"latency of {arch.short_label}: {result.error}")
                figures[key] = Latency(
                    median_ms=float(result.median_ms),
                    p90_ms=float(result.p90_ms or result.median_ms),
                    spread=result.spread,
                    memory_mb=result.peak_memory_mb,
                    stable=bool(result.stable),
                )
                if on_figure is not None:
                    on_figure(arch.short_label, figures[key])
            return figures[key]

        entries = tuple(
            replace(e, latency=figure(e.candidate.arch)) if e.status == "done" else e
            for e in table.entries
        )
    finally:
        cache.close()
    now = datetime.now(UTC).isoformat(timespec="seconds")
    header = replace(
        table.header,
        device_name=device_name(timing_device),
        latency_retimed_at=now,
        updated_at=now,
    )
    return replace(table, header=header, entries=entries)
