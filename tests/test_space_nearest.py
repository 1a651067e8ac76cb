"""``Domain.nearest``: the value a space allows that is nearest a wanted one (the scaling rules
fit their recipe changes to the study's space with it)."""

from __future__ import annotations

import pytest

from rs_search.space import Choice, Fixed, FloatRange, IntRange


def test_fixed_allows_one_value() -> None:
    assert Fixed(0.25).nearest(0.4) == 0.25


def test_choice_takes_the_nearest_option() -> None:
    dropout = Choice((0.0, 0.25, 0.5))
    assert dropout.nearest(0.4) == 0.5
    assert dropout.nearest(0.25) == 0.25
    # weight decay on a log scale: 1e-4 is as far from 5e-5 as from 2e-4; the tie goes the way
    # the rule moved
    wd = Choice((5e-5, 2e-4))
    assert wd.nearest(1e-4, log=True, prefer_higher=True) == 2e-4
    assert wd.nearest(1e-4, log=True, prefer_higher=False) == 5e-5
    assert wd.nearest(1e-4) == 5e-5  # on a linear scale 5e-5 is nearer


@pytest.mark.parametrize(
    ("domain", "wanted", "got"),
    [
        (IntRange(5, 15, step=5), 13, 15),
        (IntRange(5, 15, step=5), 99, 15),
        (IntRange(5, 15), 2, 5),
        (FloatRange(0.0, 0.3, step=0.1), 0.26, 0.3),
        (FloatRange(0.0, 0.3, step=0.1), 0.4, 0.3),
        (FloatRange(1e-5, 1e-4, log=True), 4e-5, 4e-5),
        (FloatRange(1e-5, 1e-4, log=True), 1e-3, 1e-4),
    ],
)
def test_a_range_clamps_and_snaps_to_its_step(
    domain: IntRange | FloatRange, wanted: float, got: float
) -> None:
    value = domain.nearest(wanted)
    assert value == pytest.approx(got) and domain.contains(value)
