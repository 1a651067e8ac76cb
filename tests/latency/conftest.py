"""Shared pieces of the latency tests: tiny architectures, a single-thread profile, quick timing.

The development box has 2 cores shared with other test suites, so timing tests use one thread at
batch 1 on nets of a few MFLOPs (a pass takes milliseconds) and read the protocol's own contention
flags; tests that do not check timing use ``QUICK`` so they stay fast.
"""

from __future__ import annotations

from typing import Any

from rs_search.latency.profiles import HardwareProfile, torch_version
from rs_search.latency.result import LatencyResult
from rs_search.latency.window import Protocol
from rs_search.specs import ArchSpec

T1 = HardwareProfile(name="test-cpu-b1-t1", device="cpu", batch_size=1, threads=1)
QUICK = Protocol(
    warmup_iters=2,
    warmup_s=0.02,
    rep_s=0.02,
    min_iters=3,
    min_repeats=2,
    max_repeats=2,
    min_time_s=0.0,
    busy_pause_s=0.0,
)
QUICK_ENV = (
    "warmup_iters=2,warmup_s=0.02,rep_s=0.02,min_iters=3,min_repeats=2,max_repeats=2,"
    "min_time_s=0,busy_pause_s=0"
)


def tiny(
    layout: tuple[int, ...] = (1, 1, 1, 1), width: float = 0.25, resolution: int = 32
) -> ArchSpec:
    return ArchSpec(layout=layout, width=width, resolution=resolution, num_classes=10)


def stored(
    arch: ArchSpec, profile: HardwareProfile, device_name: str, **fields: Any
) -> LatencyResult:
    """A figure as a measurement on ``device_name`` would store it (for cache tests that need a
    figure from hardware this machine does not have)."""
    values: dict[str, Any] = {
        "status": "ok",
        "median_ms": 2.0,
        "p90_ms": 2.1,
        "spread": 0.01,
        "stable": True,
        "measured_at": "2026-01-01T00:00:00+00:00",
        "torch_version": torch_version(),
        **fields,
    }
    if values["status"] != "ok":
        values.update(median_ms=None, p90_ms=None, spread=None, stable=False)
    return LatencyResult(
        arch_key=arch.key(),
        profile_name=profile.name,
        profile_key=profile.key(),
        device_name=device_name,
        batch_size=profile.batch_size,
        mode=profile.mode,
        **values,
    )
