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
