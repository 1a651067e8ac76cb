"""Which repetitions a latency figure is taken from: the protocol's choices as pure functions.

``rs_search.latency.measure`` times repetitions (blocks of passes) and hands each one here as a
``Repetition``; these functions decide, from the repetitions alone, when to stop and which
*window* (``Protocol.min_repeats`` consecutive repetitions) the figure comes from. Nothing here
reads a clock or touches torch, so every choice is tested on synthetic repetitions
(``tests/latency/test_window.py``). The choices and the measurements behind them:

- A repetition is **quiet** when at most ``max_delayed`` of its passes waited for a CPU (the
  median is then still an undelayed pass's time) and, on CPU, other processes used at most
  ``max_others_busy`` of the machine meanwhile (a neighbour on a sibling vCPU slowed a pass by
  8-69% without delaying it, on the 2-vCPU development VM; ``runqueue.MachineClock``).
- A window **agrees** when ``(max - min) / median`` of its repetition medians is within
  ``tolerance`` and so is that of the reference kernel timed after each repetition (the machine's
  own speed drifts on a VM with nothing else running; ``measure._Reference``).
- **Best window**: fewest busy repetitions first, then agreeing before disagreeing, then (among
  agreeing ones) the lowest median, else the smallest disagreement; the earliest wins a tie.
  Interference only ever adds time, and a slow mode of a VM's host can last seconds, so the
  lowest agreeing quiet window is the machine's figure (benchmarks/RESULTS.md, "Latency vs
  FLOPs": with the guest idle a 1 ms pass's median over 1.5 s windows ranged over 47%).
- **Settled** once the best window is quiet and agrees, ``settle_repeats`` repetitions ran and
  ``min_time_s`` of timing passed; ``max_repeats`` ends the run regardless, and the figure is
  then flagged (``stable=False``): stored, never passed off as good.
- Why the contention test and not the spread alone: at load 8-11 (four other test suites on two
  cores) a 3 ms pass's medians were 3-5x the quiet figure yet agreed within 5% (steady
  overload); only the run-queue delay showed that every pass waited.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

from rs_search.env import LATENCY_PROTOCOL, Environment
from rs_search.errors import RsSearchError

__all__ = [
    "DEFAULT_PROTOCOL",
    "Figure",
    "Protocol",
    "Repetition",
    "Window",
    "best_window",
    "choose",
    "note",
    "protocol_for",
    "settled",
    "window",
]


@dataclass(frozen=True, kw_only=True)
class Protocol:
    """Knobs of the timing protocol; the defaults keep a small net's measurement near 5 s."""

    warmup_iters: int = 3
    warmup_s: float = 0.5
    rep_s: float = 0.2
    min_iters: int = 5
    max_iters: int = 500
    min_repeats: int = 3  # repetitions in a window
    # Repetitions run (at most max_repeats) before a window is chosen: the agreeing quiet window
    # with the lowest median among them wins.
    settle_repeats: int = 10
    # ... and for at least this many seconds of timed repetitions: on the 2-vCPU development VM,
    # with the guest idle, a 1 ms pass's median over 1.5 s windows ranged over 47% (a slow mode of
    # the host lasting seconds, seen by no reference kernel), over 3 s windows 8%, over 10 s 2.7%;
    # the lowest agreeing window over 4 s repeats within 5% there.
    min_time_s: float = 4.0
    max_repeats: int = 40
    tolerance: float = 0.05  # max relative disagreement of the window's repetition medians
    # A repetition is quiet when at most this share of its passes waited: the median then still
    # falls among undelayed passes (at worst their 62.5th percentile), so it is the candidate's.
    max_delayed: float = 0.2
    # CPU profiles: and when other processes used at most this share of the machine's CPU time
    # (``runqueue.MachineClock``: a busy neighbour slows a pass without ever taking our core).
    max_others_busy: float = 0.25
    busy_pause_s: float = 0.5  # pause after a busy repetition, so a burst of other work can pass

    def __post_init__(self) -> None:
        if not (
            1 <= self.min_iters <= self.max_iters and 2 <= self.min_repeats <= self.max_repeats
        ):
            raise ValueError(f"inconsistent protocol: {self}")
        if self.tolerance <= 0:
            raise ValueError("protocol.tolerance must be > 0")

    def with_knobs(self, knobs: Sequence[tuple[str, str]], *, where: str) -> Protocol:
        """This protocol with ``knobs`` (name, text value) applied, e.g. the pairs of
        ``Environment.latency_protocol``; a bad name or value is one ``RsSearchError`` that
        starts with ``where`` (the variable or flag the pairs came from)."""
        kinds = {f.name: type(getattr(self, f.name)) for f in fields(Protocol)}
        values: dict[str, int | float] = {}
        for name, text in knobs:
            if name not in kinds:
                raise RsSearchError(f"{where}: unknown knob {name!r}; known: {', '.join(kinds)}")
            try:
                values[name] = kinds[name](text)
            except ValueError:
                raise RsSearchError(f"{where}: {name}={text!r} is not a number") from None
        try:
            return replace(self, **values)  # type: ignore[arg-type]
        except ValueError as exc:
            raise RsSearchError(f"{where}: {exc}") from None


DEFAULT_PROTOCOL = Protocol()


def protocol_for(environment: Environment, base: Protocol = DEFAULT_PROTOCOL) -> Protocol:
    """``base`` with the knobs of ``$RS_SEARCH_LATENCY_PROTOCOL`` (tests and smoke runs that need
    a quick figure; a production worker leaves it unset), read once at an entry point."""
    return base.with_knobs(environment.latency_protocol, where=f"${LATENCY_PROTOCOL}")


@dataclass(frozen=True, kw_only=True)
class Repetition:
    """One timed block of passes, as ``measure`` saw it."""

    times: tuple[float, ...]  # seconds per pass
    cpu: tuple[float, ...] = ()  # CPU seconds of this process per pass (all threads)
    delayed: float = 0.0  # share of passes during which a thread of ours waited for a CPU
    others: float = 0.0  # share of the machine's CPU time other processes used (0 on CUDA)
    reference: float  # seconds of the reference kernel right after the repetition

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    def quiet(self, protocol: Protocol) -> bool:
        return self.delayed <= protocol.max_delayed and self.others <= protocol.max_others_busy


@dataclass(frozen=True)
class Window:
    """``min_repeats`` consecutive repetitions ``reps[start:end]`` and how they compare."""

    start: int
    end: int
    busy: int  # repetitions in it that were not quiet
    spread: float  # (max - min) / median of the repetition medians
    drift: float  # the same for the reference kernel: how much the machine's speed moved
    median: float  # seconds: median of every pass in the window

    def agrees(self, protocol: Protocol) -> bool:
        return self.spread <= protocol.tolerance and self.drift <= protocol.tolerance

    def rank(self, protocol: Protocol) -> tuple[int, int, float]:
        """Lower is better: quiet first, then agreeing, then the lowest median (agreeing) or
        the smallest disagreement (not agreeing)."""
        if self.agrees(protocol):
            return (self.busy, 0, self.median)
        return (self.busy, 1, max(self.spread, self.drift))


@dataclass(frozen=True, kw_only=True)
class Figure:
    """What a run of repetitions reports (times in ms)."""

    median_ms: float
    p90_ms: float
    spread: float
    iterations: int  # timed passes in the chosen window
    repeats: int  # repetitions run
    contention: float  # mean share of delayed passes in the window
    others_busy: float | None  # CPU only
    cpu_ms: float | None  # CPU only: median CPU time per pass and thread
    reference_ms: float
    reference_spread: float
    stable: bool


def window(reps: Sequence[Repetition], start: int, end: int, protocol: Protocol) -> Window:
    """The window ``reps[start:end]``."""
    chosen = reps[start:end]
    return Window(
        start=start,
        end=end,
        busy=sum(not r.quiet(protocol) for r in chosen),
        spread=_spread([r.median for r in chosen]),
        drift=_spread([r.reference for r in chosen]),
        median=statistics.median(t for r in chosen for t in r.times),
    )


def best_window(reps: Sequence[Repetition], protocol: Protocol) -> Window | None:
    """The best window of ``reps`` (see the module docstring); None with fewer than
    ``min_repeats`` repetitions."""
    k = protocol.min_repeats
    best: Window | None = None
    for end in range(k, len(reps) + 1):
        w = window(reps, end - k, end, protocol)
        if best is None or w.rank(protocol) < best.rank(protocol):
            best = w
    return best


def settled(reps: Sequence[Repetition], protocol: Protocol, elapsed_s: float) -> bool:
    """Whether to stop timing after ``reps`` (``elapsed_s`` seconds since the first one began)."""
    if len(reps) >= protocol.max_repeats:
        return True
    best = best_window(reps, protocol)
    return (
        best is not None
        and best.busy == 0
        and best.agrees(protocol)
        and len(reps) >= protocol.settle_repeats
        and elapsed_s >= protocol.min_time_s
    )


def note(reps: Sequence[Repetition], protocol: Protocol) -> str | None:
    """A progress line about the newest repetition, when it calls for one (busy machine, or a
    quiet window that disagrees)."""
    if not reps:
        return None
    last = reps[-1]
    if not last.quiet(protocol):
        return (
            f"machine busy: {100 * last.delayed:.0f}% of passes waited for a CPU, other "
            f"processes used {100 * last.others:.0f}% of the CPUs; repeating"
        )
    k = protocol.min_repeats
    if len(reps) < k:
        return None
    newest = window(reps, len(reps) - k, len(reps), protocol)
    if newest.busy or newest.agrees(protocol):
        return None
    return (
        f"repetition medians disagree by {100 * newest.spread:.1f}%, machine speed "
        f"(reference kernel) by {100 * newest.drift:.1f}% (tolerance "
        f"{100 * protocol.tolerance:.0f}%); repeating"
    )


def choose(reps: Sequence[Repetition], protocol: Protocol, *, threads: int | None) -> Figure:
    """The figure of the best window of ``reps``.

    ``threads``: the CPU thread count of the passes (CPU time per pass is divided by it); None
    on an accelerator, where CPU time and the rest of the machine's load say nothing.
    Raises ``ValueError`` with fewer than ``protocol.min_repeats`` repetitions.
    """
    best = best_window(reps, protocol)
    if best is None:
        raise ValueError(
            f"{len(reps)} repetition(s): a figure needs at least {protocol.min_repeats}"
        )
    chosen = reps[best.start : best.end]
    passes = [t for r in chosen for t in r.times]
    cpu = [c for r in chosen for c in r.cpu]
    return Figure(
        median_ms=1e3 * best.median,
        p90_ms=1e3 * _percentile(passes, 0.9),
        spread=best.spread,
        iterations=len(passes),
        repeats=len(reps),
        contention=sum(r.delayed for r in chosen) / len(chosen),
        others_busy=None if threads is None else sum(r.others for r in chosen) / len(chosen),
        cpu_ms=1e3 * statistics.median(cpu) / threads if threads is not None and cpu else None,
        reference_ms=1e3 * statistics.median(r.reference for r in chosen),
        reference_spread=best.drift,
        stable=best.busy == 0 and best.agrees(protocol),
    )


def _spread(values: list[float]) -> float:
    mid = statistics.median(values)
    return (max(values) - min(values)) / mid if mid > 0 else math.inf


def _percentile(values: list[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default)."""
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)
