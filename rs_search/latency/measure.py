"""The latency/memory measurement protocol: one function for every caller (DESIGN.md §3, "Latency").

``measure(arch, profile, device=...)`` builds the network with random weights (latency does not
depend on training) on ``device`` with the profile's settings (``rs_search.latency.backends``:
threads, cuDNN autotuning, no TF32 for fp32, a fresh ``torch.compile``) and times the pass the
profile's mode names (``rs_search.latency.passes``: an inference forward pass, or a training step
at a batch halved until it fits):

1. **Warm-up** for at least ``warmup_iters`` passes and ``warmup_s`` seconds: oneDNN/cuDNN pick
   and cache their kernels, the allocator settles, ``torch.compile`` compiles.
2. **Repetitions.** A repetition is a block of ``n`` timed passes, ``n`` chosen from the warm-up
   so a block lasts about ``rep_s`` (at least ``min_iters``). Each pass is timed on its own with
   ``time.perf_counter_ns`` around it and, on CUDA, a device synchronisation before the clock is
   read; the garbage collector is off while timing. Per pass the protocol also reads how long
   the threads of this process waited for a CPU (``rs_search.latency.runqueue``): a pass is
   *delayed* when another process held a core for more than 2% of it (at least 50 us). After each
   repetition a fixed reference kernel is timed (``_Reference``: the machine's own speed).
3. **The window.** ``rs_search.latency.window`` decides from the repetitions alone when to stop
   and which window of ``min_repeats`` consecutive repetitions the figure comes from (quiet,
   agreeing, lowest median; flagged ``stable=False`` when none qualifies). The protocol pauses
   after a busy repetition so a burst of other work can pass.
4. **Figures**: median and p90 in ms per pass, spread, contention, CPU time per pass (a
   diagnostic), the reference kernel's time and drift, peak memory of one more pass
   (``rs_search.latency.memory``), and optionally the peak of one training step at the recipe's
   batch.

Out-of-memory is an answer ("does not fit"): the result has status ``oom``. Any other failure of
the candidate gives status ``error`` with the reason. A profile whose device this machine does
not have is the caller's mistake and raises ``RsSearchError``.
"""

from __future__ import annotations

import gc
import math
import os
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import torch

from rs_search.errors import TrialInterrupted, is_out_of_memory
from rs_search.latency.backends import free, resolve_device, timing_backends
from rs_search.latency.memory import mb, track_peak
from rs_search.latency.passes import Pass, build, fit_batch, train_step
from rs_search.latency.profiles import HardwareProfile, device_name, torch_version
from rs_search.latency.result import LatencyResult
from rs_search.latency.runqueue import MachineClock, RunQueueClock
from rs_search.latency.window import DEFAULT_PROTOCOL, Figure, Protocol, Repetition, choose
from rs_search.latency.window import note as window_note
from rs_search.latency.window import settled as window_settled
from rs_search.specs import ArchSpec

__all__ = ["DEFAULT_PROTOCOL", "LatencyResult", "Protocol", "measure"]

# A pass counts as delayed when the threads of this process spent more than this long, in total,
# runnable but waiting for a CPU while it ran (another process had the core).
_DELAY_FLOOR_NS = 50_000
_DELAY_SHARE = 0.02
_MAX_WARMUP_PASSES = 1000


def measure(
    arch: ArchSpec,
    profile: HardwareProfile,
    *,
    device: str,
    protocol: Protocol = DEFAULT_PROTOCOL,
    train_step_memory: bool = False,
    recipe_batch_size: int | None = None,
    progress: Callable[[str], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> LatencyResult:
    """Latency and peak memory of ``arch`` on ``profile``, measured on ``device`` (``cpu``,
    ``cuda`` for the current GPU, ``cuda:<i>``; of the profile's type). See the module docstring.

    ``stop`` (a worker's SIGTERM flag) is looked at between repetitions: once it is set the
    measurement is abandoned with ``TrialInterrupted`` (nothing is returned or stored).

    ``train_step_memory``: also the peak memory of one SGD training step at
    ``recipe_batch_size`` images (default: the profile's batch size).
    """
    dev = resolve_device(profile, device)
    base: dict[str, Any] = {
        "arch_key": arch.key(),
        "profile_name": profile.name,
        "profile_key": profile.key(),
        "device_name": device_name(str(dev)),
        "torch_version": torch_version(),
        "mode": profile.mode,
    }
    started = datetime.now(UTC).isoformat(timespec="seconds")
    load = os.getloadavg()[0] if dev.type == "cpu" and hasattr(os, "getloadavg") else None
    with timing_backends(profile, dev) as threads:
        failure: tuple[str, str] | None = None
        try:
            timing, peak, batch = _time(arch, profile, dev, protocol, threads, progress, stop)
        except TrialInterrupted:
            free(dev)
            raise
        except Exception as exc:  # noqa: BLE001 - the candidate's failure is the answer
            failure = ("oom" if is_out_of_memory(exc) else "error", _reason(exc))
        free(dev)  # after the except block: the traceback no longer holds the tensors
        if failure is not None:
            return LatencyResult(
                **base,
                batch_size=profile.batch_size,
                threads=threads,
                status=failure[0],
                measured_at=started,
                load_avg=load,
                error=failure[1],
            )
        train_peak: float | None = None
        error: str | None = None
        if train_step_memory:
            at = recipe_batch_size or profile.batch_size
            try:
                train_peak = _peak(train_step(arch, profile, dev, at), dev)
            except Exception as exc:  # noqa: BLE001
                why = "out of memory" if is_out_of_memory(exc) else _reason(exc)
                error = f"training step at batch {at}: {why}"
            free(dev)
    return LatencyResult(
        **base,
        batch_size=batch,
        threads=threads,
        status="ok",
        median_ms=timing.median_ms,
        p90_ms=timing.p90_ms,
        spread=timing.spread,
        peak_memory_mb=peak,
        train_peak_memory_mb=train_peak,
        iterations=timing.iterations,
        repeats=timing.repeats,
        contention=timing.contention,
        others_busy=timing.others_busy,
        cpu_ms=timing.cpu_ms,
        reference_ms=timing.reference_ms,
        reference_spread=timing.reference_spread,
        stable=timing.stable,
        measured_at=started,
        load_avg=load,
        error=error,
    )


def _time(
    arch: ArchSpec,
    profile: HardwareProfile,
    device: torch.device,
    protocol: Protocol,
    threads: int | None,
    progress: Callable[[str], None] | None,
    stop: Callable[[], bool] | None,
) -> tuple[Figure, float | None, int]:
    """The figure, the peak memory (MB) of one more pass, and the batch that was timed. A
    training step that runs out of memory anywhere (its first step, cuDNN's autotuning in the
    warm-up, the memory pass) is measured again at half the batch."""

    def at(batch: int) -> tuple[Figure, float | None, int]:
        timed = build(arch, profile, device, batch)
        sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else _no_sync
        with timed.context():
            figure = _repetitions(timed, sync, device, protocol, threads, progress, stop)
        return figure, _peak(timed, device), batch

    def halved(batch: int, smaller: int) -> None:
        if progress is not None:
            progress(f"a training step at batch {batch} does not fit; trying {smaller}")

    if profile.mode == "train_step":
        return fit_batch(profile.batch_size, at, device=device, on_halve=halved)
    return at(profile.batch_size)


def _no_sync() -> None:
    pass


def _repetitions(
    timed: Pass,
    sync: Callable[[], None],
    device: torch.device,
    protocol: Protocol,
    threads: int | None,
    progress: Callable[[str], None] | None,
    stop: Callable[[], bool] | None,
) -> Figure:
    clock = RunQueueClock()
    machine = MachineClock() if device.type == "cpu" else None
    reference = _Reference(device, sync)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < protocol.warmup_iters or time.perf_counter() - start < protocol.warmup_s:
        times.append(_timed(timed.run, sync, clock)[0])
        if len(times) >= _MAX_WARMUP_PASSES:
            break
    per_pass = statistics.median(times[-max(1, len(times) // 2) :])
    n = min(
        protocol.max_iters,
        max(protocol.min_iters, math.ceil(protocol.rep_s / max(per_pass, 1e-9))),
    )
    reps: list[Repetition] = []
    timed_from = time.perf_counter()
    while True:
        if stop is not None and stop():
            raise TrialInterrupted("stopped while measuring latency")
        rep = _repetition(timed.run, sync, clock, machine, reference, n)
        reps.append(rep)
        line = window_note(reps, protocol)
        if line is not None and progress is not None:
            progress(line)
        if window_settled(reps, protocol, time.perf_counter() - timed_from):
            break
        if not rep.quiet(protocol):
            time.sleep(protocol.busy_pause_s)  # let another process's burst pass
    clock.close()
    return choose(reps, protocol, threads=threads)


def _peak(timed: Pass, device: torch.device) -> float | None:
    """Peak memory (MB) of one more pass: what stays resident plus the pass's own peak."""
    with timed.context(), track_peak(device) as tracker:
        timed.run()
    return None if tracker.extra_bytes is None else mb(timed.resident + tracker.extra_bytes)


def _timed(
    run: Callable[[], object], sync: Callable[[], None], clock: RunQueueClock
) -> tuple[float, float, bool]:
    """Seconds of one pass, CPU seconds of this process meanwhile, and whether a thread of ours
    waited for a CPU meanwhile."""
    sync()
    waited = clock.read()
    c0 = time.process_time_ns()
    t0 = time.perf_counter_ns()
    run()
    sync()
    elapsed = time.perf_counter_ns() - t0
    cpu = time.process_time_ns() - c0
    delay = clock.read() - waited
    return elapsed / 1e9, cpu / 1e9, delay > max(_DELAY_FLOOR_NS, _DELAY_SHARE * elapsed)


def _repetition(
    run: Callable[[], object],
    sync: Callable[[], None],
    clock: RunQueueClock,
    machine: MachineClock | None,
    reference: _Reference,
    n: int,
) -> Repetition:
    enabled = gc.isenabled()
    gc.disable()
    start = machine.read() if machine is not None else None
    try:
        passes = [_timed(run, sync, clock) for _ in range(n)]
        ref = reference.sample()
    finally:
        if enabled:
            gc.enable()
    others = 0.0
    if machine is not None and start is not None:
        others = MachineClock.others_busy(start, machine.read())
    return Repetition(
        times=tuple(t for t, _, _ in passes),
        cpu=tuple(c for _, c, _ in passes),
        delayed=sum(d for _, _, d in passes) / n,
        others=others,
        reference=ref,
    )


class _Reference:
    """A fixed kernel timed after every repetition: how fast the *machine* runs right now.

    On the 2-vCPU development VM a single-thread pass of a tiny net alternated between ~2.8 and
    ~4.5 ms over seconds with the guest idle (others <= 1%; a plain Python loop and a 64x64 matmul
    drifted alike, by 37-52%): the host's frequency or a sibling hyperthread, which nothing inside
    the guest can see. Repetitions that agree while the reference kernel drifted are not stable,
    and ``reference_ms`` lets two figures be compared: taken at different machine speeds, they
    differ for that reason alone.
    """

    SIZE = 128
    TARGET_S = 0.001

    def __init__(self, device: torch.device, sync: Callable[[], None]) -> None:
        generator = torch.Generator().manual_seed(0)
        self.a = torch.randn(self.SIZE, self.SIZE, generator=generator).to(device)
        self.b = torch.randn(self.SIZE, self.SIZE, generator=generator).to(device)
        self.sync = sync
        self.k = 1
        for _ in range(3):  # calibrate: about TARGET_S per sample
            once = self._run() / self.k
            self.k = max(1, round(self.TARGET_S / max(once, 1e-9)))

    def _run(self) -> float:
        self.sync()
        t0 = time.perf_counter_ns()
        for _ in range(self.k):
            torch.mm(self.a, self.b)
        self.sync()
        return (time.perf_counter_ns() - t0) / 1e9

    def sample(self, n: int = 7) -> float:
        """Median seconds of ``n`` runs of the kernel."""
        return statistics.median(self._run() for _ in range(n))


def _reason(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    first = lines[0] if lines else ""
    return f"{type(exc).__name__}: {first}"[:500]
