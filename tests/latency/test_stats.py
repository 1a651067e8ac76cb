"""Rank correlation, checked against scipy where it is installed."""

from __future__ import annotations

import random

import pytest

from rs_search.latency.stats import inversions, ranks, spearman


def test_ranks_average_ties() -> None:
    assert ranks([10, 20, 20, 5]) == [2.0, 3.5, 3.5, 1.0]


def test_spearman_extremes() -> None:
    assert spearman([1, 2, 3, 4], [10, 20, 30, 1000]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)


def test_spearman_matches_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = random.Random(7)
    for _ in range(20):
        n = rng.randint(3, 30)
        x = [rng.choice([1, 2, 3, 4, 5, 6]) for _ in range(n)]  # ties on purpose
        y = [rng.random() for _ in range(n)]
        assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)


def test_inversions_respect_noise() -> None:
    flops = [1.0, 2.0]
    assert inversions(flops, [10.0, 9.0], [0.2, 0.2]) == []  # 10% faster, 20% noise: no claim
    found = inversions(flops, [10.0, 5.0], [0.05, 0.05])
    assert len(found) == 1 and found[0].more_flops == 1 and found[0].latency_ratio == 0.5
