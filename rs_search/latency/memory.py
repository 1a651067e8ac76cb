"""Peak memory of a forward pass (or a training step), with one definition on every device.

**What is counted.** The bytes of tensors that torch's allocator holds at the peak: the
parameters, buffers, optimizer state and inputs that are resident before the pass, plus the
highest point the allocations made *during* the pass reach (activations, convolution workspaces,
gradients). The CUDA context, the cuDNN/oneDNN libraries, thread stacks and allocator
fragmentation are not counted: they are a per-process constant, not a property of the candidate,
and a deployment adds them on top.

**How.** CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``, minus what
was allocated before the pass. CPU: the process RSS is useless for this (glibc keeps freed memory
and reuses it, so a second model can run without the RSS moving) and ``tracemalloc`` does not see
torch's allocations. Torch's own profiler does: with ``profile_memory=True`` every allocation and
free of the CPU allocator is an event with its size and time, so the running sum of the events of
the pass, in time order, peaks exactly at the pass's peak. ``oneDNN`` scratch memory that does not
come from torch's allocator is not seen; for the convolution nets measured here the difference is
small against the activations (checked against the high-water RSS of a fresh process in
``benchmarks/latency_flops.py``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch


class PeakTracker:
    """Filled in by ``track_peak``: ``extra_bytes`` = highest allocation level above the start."""

    extra_bytes: int | None = None


def resident_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes of the distinct storages behind ``tensors`` (shared storages counted once)."""
    seen: set[int] = set()
    total = 0
    for tensor in tensors:
        storage = tensor.untyped_storage()
        ptr = storage.data_ptr()
        if ptr in seen or storage.device.type == "meta":
            continue
        seen.add(ptr)
        total += storage.nbytes()
    return total


@contextmanager
def track_peak(device: torch.device) -> Iterator[PeakTracker]:
    """Track the peak of allocations made inside the ``with`` block on ``device``."""
    tracker = PeakTracker()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        yield tracker
        torch.cuda.synchronize(device)
        tracker.extra_bytes = max(0, torch.cuda.max_memory_allocated(device) - start)
        return
    from torch.profiler import ProfilerActivity, profile

    prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
    with _quiet_native_stderr():  # kineto prints start/stop lines straight to file descriptor 2
        prof.__enter__()
    try:
        yield tracker
    finally:
        with _quiet_native_stderr():
            prof.__exit__(None, None, None)
    tracker.extra_bytes = _cpu_peak(prof)


def _cpu_peak(prof: torch.profiler.profile) -> int:
    from torch._C._profiler import _EventType, _ExtraFields_Allocation

    assert prof.profiler is not None and prof.profiler.kineto_results is not None
    events: list[tuple[int, int]] = []
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        node = stack.pop()
        stack.extend(node.children)
        extra = node.extra_fields
        if node.tag == _EventType.Allocation and isinstance(extra, _ExtraFields_Allocation):
            if extra.device.type == "cpu":
                events.append((node.start_time_ns, extra.alloc_size))
    events.sort(key=lambda e: e[0])  # stable: same-time events keep their recorded order
    level = peak = 0
    for _, size in events:
        level += size
        peak = max(peak, level)
    return peak


@contextmanager
def _quiet_native_stderr() -> Iterator[None]:
    """Silence file descriptor 2 (C++ log lines) for a moment; Python's exceptions still raise."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real stderr (embedded, closed): nothing to silence
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def mb(num_bytes: int) -> float:
    return num_bytes / 2**20
