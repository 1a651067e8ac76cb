"""Rank statistics for "do FLOPs predict latency?" (Bello et al. 2021, scaling rule 3).

Spearman's rank correlation is scipy's (``scipy.stats.spearmanr``, tie-averaged ranks); this
module only says when it is undefined, and finds the pairs where FLOPs mislead beyond noise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rank correlation of ``x`` and ``y``; None with fewer than 3 pairs or when an
    axis is constant (no ranking to compare)."""
    if len(x) != len(y):
        raise ValueError(f"spearman: {len(x)} x values but {len(y)} y values")
    if len(x) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return None
    from scipy.stats import spearmanr  # imported here: scipy costs ~0.3 s to import

    rho = float(spearmanr(x, y).statistic)
    return None if math.isnan(rho) else rho


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
