"""The protocol's window choice on synthetic repetitions: no clock, no torch, no machine noise.

Each case builds the repetitions a measurement would have seen (pass times, contention, the
reference kernel) and checks the figure ``rs_search.latency.window`` picks from them.
"""

from __future__ import annotations

import pytest

from rs_search.env import Environment
from rs_search.errors import RsSearchError
from rs_search.latency.window import (
    DEFAULT_PROTOCOL,
    Protocol,
    Repetition,
    best_window,
    choose,
    note,
    protocol_for,
    settled,
)

P = Protocol(min_repeats=3, settle_repeats=6, max_repeats=12, min_time_s=1.0, tolerance=0.05)


def rep(
    ms: float,
    *,
    jitter: float = 0.002,
    delayed: float = 0.0,
    others: float = 0.0,
    ref_ms: float = 1.0,
    n: int = 9,
) -> Repetition:
    """A repetition of ``n`` passes around ``ms`` (+-``jitter`` relative), with one CPU second
    per pass second on one thread."""
    times = tuple(ms / 1e3 * (1 + jitter * ((i % 3) - 1)) for i in range(n))
    return Repetition(
        times=times, cpu=times, delayed=delayed, others=others, reference=ref_ms / 1e3
    )


def test_a_stable_run_settles_and_reports_its_median() -> None:
    reps = [rep(10.0) for _ in range(6)]
    assert not settled(reps[:5], P, elapsed_s=5.0)  # fewer than settle_repeats
    assert not settled(reps, P, elapsed_s=0.5)  # not min_time_s of timing yet
    assert settled(reps, P, elapsed_s=1.0)
    figure = choose(reps, P, threads=1)
    assert figure.stable and figure.median_ms == pytest.approx(10.0)
    assert figure.spread < P.tolerance and figure.repeats == 6 and figure.iterations == 27
    assert figure.p90_ms == pytest.approx(10.02)
    assert figure.cpu_ms == pytest.approx(10.0) and figure.others_busy == 0.0
    assert figure.reference_ms == pytest.approx(1.0) and figure.reference_spread == 0.0
    assert note(reps, P) is None


def test_a_slow_mode_of_the_host_is_not_the_figure() -> None:
    """Repetitions agree within a slow phase and within a fast one; the fast phase is the
    machine's figure (interference only adds time), wherever it lies in the run."""
    reps = [rep(13.0) for _ in range(4)] + [rep(10.0) for _ in range(4)] + [rep(13.0)]
    best = best_window(reps, P)
    assert best is not None and (best.start, best.end) == (4, 7)  # the earliest fast window
    figure = choose(reps, P, threads=1)
    assert figure.stable and figure.median_ms == pytest.approx(10.0)


def test_reference_drift_makes_agreeing_medians_disagree() -> None:
    """The medians agree but the machine's own speed moved by 20% meanwhile (0.2 / 1.2 of the
    window's median reference time): not a figure to trust, and the progress line says why."""
    reps = [rep(10.0, ref_ms=r) for r in (1.0, 1.2, 1.0, 1.2, 1.0, 1.2)]
    assert not settled(reps, P, elapsed_s=10.0)
    line = note(reps, P)
    assert line is not None and "machine speed (reference kernel) by 16.7%" in line
    figure = choose(reps, P, threads=1)
    assert not figure.stable and figure.reference_spread == pytest.approx(0.2 / 1.2)
    # once the machine's speed holds, a later window qualifies
    reps += [rep(10.0, ref_ms=1.2) for _ in range(3)]
    assert settled(reps, P, elapsed_s=10.0) and choose(reps, P, threads=1).stable


def test_contention_beats_a_lower_median() -> None:
    """Busy repetitions are never preferred, even when their median is lower (a busy window's
    median is not the candidate's), and a run that never got a quiet window is flagged."""
    quiet = [rep(10.0) for _ in range(3)]
    busy = [rep(8.0, delayed=0.9) for _ in range(3)]
    figure = choose(busy + quiet, P, threads=1)
    assert figure.stable and figure.median_ms == pytest.approx(10.0)
    assert figure.contention == 0.0
    line = note(busy, P)
    assert line is not None and line.startswith("machine busy: 90% of passes waited")
    # a busy neighbour that never takes our core: the rest of the machine's share decides
    neighbour = [rep(12.0, others=0.6) for _ in range(6)]
    flagged = choose(neighbour, P, threads=1)
    assert not flagged.stable and flagged.others_busy == pytest.approx(0.6)
    assert not settled(neighbour, P, elapsed_s=10.0)


def test_steady_overload_that_agrees_is_still_flagged() -> None:
    """At load 8-11 medians 3-5x the quiet figure agreed within 5%: only contention tells."""
    reps = [rep(40.0, delayed=1.0) for _ in range(P.max_repeats)]
    assert settled(reps, P, elapsed_s=0.0)  # max_repeats ends the run regardless
    figure = choose(reps, P, threads=1)
    assert not figure.stable and figure.contention == 1.0 and figure.spread < P.tolerance


def test_noisy_run_reports_the_smallest_disagreement() -> None:
    medians = [10.0, 13.0, 10.5, 12.0, 11.0, 11.2, 14.0]
    reps = [rep(m) for m in medians]
    figure = choose(reps, P, threads=1)
    # windows' spreads: 0.29, 0.24, 0.14, 0.09, 0.28 -> reps 3..5 (12.0, 11.0, 11.2)
    assert not figure.stable and figure.spread == pytest.approx(1.0 / 11.2)
    assert figure.median_ms == pytest.approx(11.2, rel=0.01)


def test_too_few_repetitions() -> None:
    reps = [rep(10.0), rep(10.0)]
    assert best_window(reps, P) is None
    assert not settled(reps, P, elapsed_s=100.0)
    assert note([], P) is None
    with pytest.raises(ValueError, match="2 repetition"):
        choose(reps, P, threads=1)


def test_accelerator_figures_have_no_cpu_fields() -> None:
    figure = choose([rep(1.0) for _ in range(3)], P, threads=None)
    assert figure.cpu_ms is None and figure.others_busy is None


def test_protocol_knobs_from_the_environment() -> None:
    env = Environment.from_environ({"RS_SEARCH_LATENCY_PROTOCOL": "min_time_s=0,max_repeats=6"})
    protocol = protocol_for(env)
    assert protocol.min_time_s == 0.0 and protocol.max_repeats == 6
    assert protocol.settle_repeats == DEFAULT_PROTOCOL.settle_repeats
    assert protocol_for(Environment()) == DEFAULT_PROTOCOL
    for raw, needle in [
        ("nope=1", "unknown knob 'nope'"),
        ("min_repeats=x", "min_repeats='x' is not a number"),
        ("min_repeats=1", "inconsistent protocol"),
    ]:
        bad = Environment.from_environ({"RS_SEARCH_LATENCY_PROTOCOL": raw})
        with pytest.raises(RsSearchError, match=needle) as info:
            protocol_for(bad)
        assert str(info.value).startswith("$RS_SEARCH_LATENCY_PROTOCOL: ")
