"""Shared pieces of the latency tests: tiny architectures, a single-thread profile, quick timing.

The development box has 2 cores shared with other test suites, so timing tests use one thread at
batch 1 on nets of a few MFLOPs (a pass takes milliseconds) and read the protocol's own contention
flags; tests that do not check timing use ``QUICK`` so they stay fast.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from rs_search.latency.measure import Protocol
from rs_search.latency.profiles import HardwareProfile
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


@dataclass
class BuildCounter:
    calls: int = 0


@pytest.fixture
def count_builds(monkeypatch: pytest.MonkeyPatch) -> Iterator[BuildCounter]:
    """Counts calls of ``rs_search.models.build_model`` (the real builder still runs)."""
    import rs_search.models as models

    counter = BuildCounter()
    real = models.build_model

    def counting(*args: object, **kwargs: object) -> object:
        counter.calls += 1
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(models, "build_model", counting)
    yield counter
