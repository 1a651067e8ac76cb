"""The figures a search worker uses (``rs_search.search.deps.CachedLatency``): taken on the target
hardware, on the worker's own device, and a wait for one that ends when the worker is stopped."""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path

import pytest

from rs_search.errors import CandidateOutOfMemory, TrialInterrupted
from rs_search.latency.cache import LatencyCache, local_key
from rs_search.latency.profiles import HardwareProfile
from rs_search.search.deps import CachedLatency, LatencyUnavailable
from tests.latency.conftest import QUICK, T1, stored, tiny

GPU = HardwareProfile(name="gpu-b8", device="cuda", batch_size=8, dtype="bf16")


@pytest.fixture
def storage(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'study.db'}"


def _source(storage: str, target: HardwareProfile, **kwargs: object) -> CachedLatency:
    options: dict[str, object] = {"device": "cpu", "protocol": QUICK, "poll_s": 0.05, **kwargs}
    return CachedLatency(storage, target.to_dict(), **options)  # type: ignore[arg-type]


def test_another_machines_figure_is_not_this_targets(storage: str) -> None:
    """A CPU target that names no hardware is the CPU the worker measures on: a figure another
    CPU stored for the same profile settings is not used (it is another machine's latency)."""
    arch = tiny()
    with LatencyCache(storage) as cache:
        cache.put(arch, T1, stored(arch, T1, "Some Other CPU (64 CPUs)", median_ms=0.001))
    figures = _source(storage, T1).figures(arch)
    with LatencyCache(storage) as cache:
        mine = cache.get(arch, T1)
    assert mine is not None and mine.device_name == local_key(arch, T1).device_name
    assert figures.median_ms == mine.median_ms != 0.001


def test_a_named_target_takes_only_that_hardwares_figures(storage: str) -> None:
    """A target that names its hardware: figures from a device of that name count (a latency
    worker there stored them), nothing else does, and a worker elsewhere does not measure."""
    arch = tiny()
    target = dataclasses.replace(GPU, device_name="NVIDIA H200")
    with LatencyCache(storage) as cache:
        cache.put(arch, target, stored(arch, target, "NVIDIA A100-SXM4-80GB", median_ms=9.0))
    with pytest.raises(LatencyUnavailable, match=r"gpu-b8 \(NVIDIA H200\) after 0s"):
        _source(storage, target, wait_s=0.0).figures(arch)
    with LatencyCache(storage) as cache:
        cache.put(arch, target, stored(arch, target, "NVIDIA H200", median_ms=4.0))
    assert _source(storage, target, wait_s=0.0).figures(arch).median_ms == 4.0
    # a CPU target pinned to another CPU model: this machine does not measure it either
    elsewhere = dataclasses.replace(T1, device_name="Some Other CPU (64 CPUs)")
    with pytest.raises(LatencyUnavailable, match="cannot measure it"):
        _source(storage, elsewhere, wait_s=0.0).figures(arch)


def test_an_unnamed_remote_target_needs_one_device(storage: str) -> None:
    """A CUDA target seen from a CPU worker, naming no hardware: a latency worker's figure is
    used while one device holds the profile's figures; figures of two GPUs are not mixed."""
    arch = tiny()
    with LatencyCache(storage) as cache:
        cache.put(arch, GPU, stored(arch, GPU, "NVIDIA H200", median_ms=4.0))
    assert _source(storage, GPU, wait_s=0.0).figures(arch).median_ms == 4.0
    with LatencyCache(storage) as cache:
        cache.put(arch, GPU, stored(arch, GPU, "NVIDIA A100-SXM4-80GB", median_ms=9.0))
    with pytest.raises(LatencyUnavailable, match=r"name the target hardware .*target.device_name"):
        _source(storage, GPU, wait_s=0.0).figures(arch)


def test_out_of_memory_on_the_target_is_the_candidates_answer(storage: str) -> None:
    arch = tiny()
    step = dataclasses.replace(GPU, mode="train_step", device_name="NVIDIA H200")
    with LatencyCache(storage) as cache:
        cache.put(arch, step, stored(arch, step, "NVIDIA H200", status="oom", error="at batch 1"))
    with pytest.raises(CandidateOutOfMemory, match="gpu-b8 for train step"):
        _source(storage, step, wait_s=0.0).figures(arch)


def test_a_wait_for_a_latency_worker_ends_when_stopped(storage: str) -> None:
    """SIGTERM during an hour's wait for a figure only other hardware can measure: the wait
    ends within a poll, with ``TrialInterrupted`` (the worker hands its trial back)."""
    target = dataclasses.replace(GPU, device_name="TPU v9")
    stop = threading.Event()
    outcome: list[BaseException] = []
    source = _source(storage, target, wait_s=3600.0, poll_s=3600.0, stop=stop.is_set)

    def ask() -> None:
        try:
            source.figures(tiny())
        except BaseException as exc:  # noqa: BLE001 - what the wait ended with is the check
            outcome.append(exc)

    thread = threading.Thread(target=ask)
    thread.start()
    thread.join(timeout=0.5)
    assert thread.is_alive()  # waiting for the latency worker
    stop.set()
    started = time.monotonic()
    thread.join(timeout=10)
    assert not thread.is_alive(), "the wait ignored the stop flag"
    assert time.monotonic() - started < 2
    assert len(outcome) == 1 and isinstance(outcome[0], TrialInterrupted)
