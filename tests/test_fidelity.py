"""The rank-agreement statistic shared by bench tables and a study's report (rs_search/fidelity.py):
Kendall tau-b, and when a rung is judged and trusted (project heuristics)."""

from __future__ import annotations

import math

import pytest

from rs_search.fidelity import MIN_TRIALS, agreement_at, kendall_tau, trust_note


def test_trust_rules_of_the_pure_statistic() -> None:
    few = agreement_at(1, [1.0, 2.0, 3.0], [3.0, 2.0, 1.0])
    assert few.tau == pytest.approx(-1.0) and few.n == 3 < MIN_TRIALS
    assert not few.too_low and "too few trials" in (trust_note(few) or "")
    undefined = agreement_at(1, [1.0, 1.0, 1.0, 1.0, 1.0], [1.0, 2.0, 3.0, 4.0, 5.0])
    assert math.isnan(undefined.tau) and not undefined.too_low
    assert "undefined" in (trust_note(undefined) or "")
    # One swapped pair of five: tau = (9 - 1) / 10 = 0.8, trusted; four swapped: 0.2, not.
    one_swap = agreement_at(2, [2.0, 1.0, 3.0, 4.0, 5.0], [1.0, 2.0, 3.0, 4.0, 5.0])
    assert one_swap.tau == pytest.approx(0.8) and trust_note(one_swap) is None
    many = agreement_at(2, [3.0, 2.0, 1.0, 4.0, 5.0], [1.0, 2.0, 3.0, 4.0, 5.0])
    assert many.tau == pytest.approx(0.4) and many.too_low


def test_tau_needs_as_many_values_at_the_rung_as_at_the_end() -> None:
    with pytest.raises(ValueError, match="as many values"):
        kendall_tau([1.0, 2.0], [1.0, 2.0, 3.0])
