"""Rank statistics for "do FLOPs predict latency?" (Bello et al. 2021, scaling rule 3).

Written out rather than imported from scipy: twenty lines, no optional dependency, and the tests
check them against ``scipy.stats.spearmanr`` where scipy is installed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def ranks(values: Sequence[float]) -> list[float]:
    """Ranks 1..n; tied values share the mean of their ranks (as ``scipy.stats.rankdata``)."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        mean_rank = (i + j) / 2 + 1
        for k in range(i, j + 1):
            out[order[k]] = mean_rank
        i = j + 1
    return out


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    if len(x) != len(y) or len(x) < 2:
        raise ValueError("pearson needs two sequences of the same length >= 2")
    mx, my = sum(x) / len(x), sum(y) / len(y)
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True))
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else math.nan


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation: Pearson's correlation of the (tie-averaged) ranks."""
    return pearson(ranks(x), ranks(y))


@dataclass(frozen=True)
class Inversion:
    """A pair where the architecture with more FLOPs was measurably faster."""

    more_flops: int  # index of the architecture with more FLOPs
    fewer_flops: int
    flops_ratio: float  # more / fewer
    latency_ratio: float  # latency of more / latency of fewer (< 1: faster)


def inversions(
    flops: Sequence[float], latency_ms: Sequence[float], noise: Sequence[float]
) -> list[Inversion]:
    """Pairs where more FLOPs ran faster by more than both measurements' relative noise."""
    found = []
    for i in range(len(flops)):
        for j in range(len(flops)):
            if (
                flops[i] > flops[j]
                and latency_ms[i] * (1 + max(noise[i], noise[j])) < latency_ms[j]
            ):
                found.append(Inversion(i, j, flops[i] / flops[j], latency_ms[i] / latency_ms[j]))
    return sorted(found, key=lambda v: v.latency_ratio / v.flops_ratio)
