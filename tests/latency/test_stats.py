"""Rank correlation (scipy's) and the pairs where FLOPs mislead beyond noise."""

from __future__ import annotations

import pytest

from rs_search.latency.stats import inversions, spearman


def test_spearman_extremes_and_ties() -> None:
    assert spearman([1, 2, 3, 4], [10, 20, 30, 1000]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # tied x values share the mean of their ranks: ranks (1, 2.5, 2.5, 4) against (1, 2, 3, 4)
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(0.9486832980505138)


def test_spearman_is_undefined_without_a_ranking() -> None:
    assert spearman([1, 2], [2, 1]) is None  # fewer than 3 pairs
    assert spearman([1, 1, 1], [1, 2, 3]) is None  # a constant axis
    with pytest.raises(ValueError, match="3 x values but 2 y values"):
        spearman([1, 2, 3], [1, 2])


def test_inversions_respect_noise() -> None:
    flops = [1.0, 2.0]
    assert inversions(flops, [10.0, 9.0], [0.2, 0.2]) == []  # 10% faster, 20% noise: no claim
    found = inversions(flops, [10.0, 5.0], [0.05, 0.05])
    assert len(found) == 1 and found[0].more_flops == 1 and found[0].latency_ratio == 0.5
