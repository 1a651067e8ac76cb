"""How long the threads of this process waited for a CPU: the contention signal of the protocol.

Linux keeps, per thread, the time it spent runnable but not running ("run delay", the second
field of ``/proc/self/task/<tid>/schedstat``, in ns). A forward pass during which that total grows
was slowed by *another* process holding a core — time that belongs to the other process, not to
the candidate. Measured on the 2-core development box at load 11: with 1 thread, 80-99% of 3 ms
passes were delayed and their median wall time was 3-5x the undelayed one; with 2 threads the
median grew 50x (a preempted OpenMP thread stalls the whole pass at the next barrier).

Where ``/proc`` has no schedstat (not Linux, or a kernel without CONFIG_SCHED_INFO) ``read()``
returns 0 always, so no pass is ever seen as delayed and only the repetition spread guards the
figure.
"""

from __future__ import annotations

import os

_TASKS = "/proc/self/task"


class RunQueueClock:
    """Total run delay (ns) of every thread of this process; cheap enough to read per pass
    (one directory listing and one ``pread`` per thread, about 20 microseconds)."""

    def __init__(self) -> None:
        self._fds: dict[str, int] = {}
        self._gone = 0  # delay of threads that exited, so the total never goes backwards
        self._last: dict[str, int] = {}
        self.available = os.path.exists(f"{_TASKS}/{os.getpid()}/schedstat")

    def read(self) -> int:
        if not self.available:
            return 0
        try:
            tids = os.listdir(_TASKS)
        except OSError:
            return 0
        total = 0
        for tid in tids:
            fd = self._fds.get(tid)
            try:
                if fd is None:
                    fd = self._fds[tid] = os.open(f"{_TASKS}/{tid}/schedstat", os.O_RDONLY)
                value = int(os.pread(fd, 128, 0).split()[1])
            except (OSError, IndexError, ValueError):
                continue
            self._last[tid] = value
            total += value
        for tid in [t for t in self._fds if t not in tids]:  # threads that exited
            self._gone += self._last.pop(tid, 0)
            os.close(self._fds.pop(tid))
        return total + self._gone

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def __del__(self) -> None:
        try:
            self.close()
        except OSError:
            pass


def contention_probe(seconds: float = 0.3) -> float:
    """Share of ``seconds`` of single-thread busy work that this process spent waiting for a CPU:
    about 0 on an idle machine, ``1 - cores / runnable tasks`` on a saturated one. A cheap look
    at the machine before timing anything (tests and benchmarks report it)."""
    import time

    clock = RunQueueClock()
    if not clock.available:
        return 0.0
    waited = clock.read()
    start = time.perf_counter()
    spins = 0
    while time.perf_counter() - start < seconds:
        spins += 1
    elapsed = time.perf_counter() - start
    share = (clock.read() - waited) / 1e9 / elapsed
    clock.close()
    return min(1.0, max(0.0, share))


class MachineClock:
    """CPU time the *rest* of the machine used: ``/proc/stat``'s busy time over all CPUs minus
    this process's own CPU time (10 ms resolution, so it is read per repetition, not per pass).

    Run-queue delay does not see a neighbour that never takes our core: on the 2-vCPU
    development VM a process streaming memory on the other vCPU made a one-thread pass of a tiny
    net take 1.1-1.7x the CPU time (shared core or memory bandwidth on the host), steadily, so
    repetitions could agree within 5% on an inflated figure. The protocol therefore also wants
    the rest of the machine mostly idle before it calls a CPU figure stable.
    """

    def __init__(self) -> None:
        self.available = os.path.exists("/proc/stat")
        self._tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def read(self) -> tuple[float, float, float]:
        """(busy seconds of all CPUs, total seconds of all CPUs, CPU seconds of this process)."""
        times = os.times()
        ours = times.user + times.system
        if not self.available:
            return 0.0, 0.0, ours
        try:
            with open("/proc/stat") as handle:
                fields = [int(v) for v in handle.readline().split()[1:]]
        except (OSError, ValueError):
            return 0.0, 0.0, ours
        # user nice system idle iowait irq softirq steal (guest time is inside user)
        busy = sum(fields[i] for i in (0, 1, 2, 5, 6, 7) if i < len(fields))
        total = busy + sum(fields[i] for i in (3, 4) if i < len(fields))
        return busy / self._tick, total / self._tick, ours

    @staticmethod
    def others_busy(start: tuple[float, float, float], end: tuple[float, float, float]) -> float:
        """Share of the whole machine's CPU time that other processes used between two reads."""
        total = end[1] - start[1]
        if total <= 0:
            return 0.0
        others = (end[0] - start[0]) - (end[2] - start[2])
        return min(1.0, max(0.0, others / total))


def others_busy_probe(seconds: float = 0.5) -> float:
    """Share of the machine's CPU time other processes used while this one slept ``seconds``."""
    import time

    clock = MachineClock()
    start = clock.read()
    time.sleep(seconds)
    return MachineClock.others_busy(start, clock.read())
