"""Data step of "FLOPs vs latency" and "parameters vs memory": where proxies mislead.

Scaling rule 3 of Bello et al. (2021, Sec. 7.2): FLOPs and parameter counts do not predict
latency or memory on real hardware (ResNet-RS is 1.7-2.7x faster than EfficientNet at similar
accuracy despite more FLOPs and parameters). The figure puts the proxy against the measurement,
one point per architecture, with Spearman's rank correlation and the share of architecture pairs
the proxy orders the wrong way.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from rs_search.latency.stats import spearman
from rs_search.specs import ArchSpec
from rs_search.study.record import TrialRecord


def flops_scale(flops: Sequence[float]) -> tuple[float, str]:
    """Divisor and axis label for FLOP counts: GFLOPs for ImageNet-sized nets (ResNet-RS-50 at
    160 px: about 4.6 GFLOPs), MFLOPs for the small nets of CPU searches, so ticks stay readable."""
    if flops and max(flops) < 1e9:
        return 1e6, "MFLOPs (forward, 1 image)"
    return 1e9, "GFLOPs (forward, 1 image)"


@dataclass(frozen=True, kw_only=True)
class Correlation:
    """A proxy (x) against a measurement (y), one point per distinct architecture."""

    x_label: str
    y_label: str
    arch_keys: tuple[str, ...]
    labels: tuple[str, ...]
    x: tuple[float, ...]
    y: tuple[float, ...]
    spearman: float | None  # None with fewer than 3 architectures or a constant axis
    discordant: float | None  # share of pairs ordered differently by x and y (ties excluded)


@dataclass(frozen=True, kw_only=True)
class ComplexityData:
    flops_latency: Correlation
    params_memory: Correlation


def complexity_data(
    records: Sequence[TrialRecord],
    *,
    memory_by_arch: Mapping[str, float] | None = None,
    flops: Callable[[ArchSpec], int] | None = None,
    params: Callable[[ArchSpec], int] | None = None,
) -> ComplexityData:
    """Latency comes from the trial values or, for trials that did not complete (pruned, failed,
    running: measured before training all the same), from the worker's ``latency_ms``; memory
    from a third objective, the worker's ``memory_mb``, or ``memory_by_arch`` (arch key -> peak
    memory MB, from the latency cache). ``flops``/``params`` default to
    ``rs_search.models.complexity``."""
    if flops is None or params is None:
        from rs_search.models.complexity import count_flops, count_params

        flops = flops or count_flops
        params = params or count_params
    latency: dict[str, list[float]] = {}
    memory: dict[str, list[float]] = {}
    archs: dict[str, ArchSpec] = {}
    for record in records:
        if record.arch is None:
            continue
        key = record.arch.key()
        if record.latency_ms is not None or record.memory_mb is not None:
            archs[key] = record.arch
        if record.latency_ms is not None:
            latency.setdefault(key, []).append(record.latency_ms)
        if record.memory_mb is not None:
            memory.setdefault(key, []).append(record.memory_mb)
    for key, value in (memory_by_arch or {}).items():
        if key in archs and key not in memory:
            memory[key] = [value]
    divisor, flops_label = flops_scale([flops(archs[k]) for k in latency])
    return ComplexityData(
        flops_latency=_correlation(
            flops_label,
            "measured latency (ms)",
            archs,
            {k: statistics.median(v) for k, v in latency.items()},
            lambda a: flops(a) / divisor,
        ),
        params_memory=_correlation(
            "parameters (M)",
            "measured peak memory (MB)",
            archs,
            {k: statistics.median(v) for k, v in memory.items()},
            lambda a: params(a) / 1e6,
        ),
    )


def _correlation(
    x_label: str,
    y_label: str,
    archs: Mapping[str, ArchSpec],
    measured: Mapping[str, float],
    proxy: Callable[[ArchSpec], float],
) -> Correlation:
    keys = sorted(measured, key=lambda k: (proxy(archs[k]), measured[k]))
    xs = [float(proxy(archs[k])) for k in keys]
    ys = [float(measured[k]) for k in keys]
    return Correlation(
        x_label=x_label,
        y_label=y_label,
        arch_keys=tuple(keys),
        labels=tuple(archs[k].short_label for k in keys),
        x=tuple(xs),
        y=tuple(ys),
        spearman=spearman(xs, ys),
        discordant=discordant_share(xs, ys),
    )


def discordant_share(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Share of pairs (i, j) with x_i < x_j but y_i > y_j or vice versa: how often picking the
    smaller proxy picks the slower (or larger) model. Pairs tied on either axis are skipped."""
    pairs = [
        (a, b) for a, b in itertools.combinations(range(len(x)), 2) if x[a] != x[b] and y[a] != y[b]
    ]
    if not pairs:
        return None
    wrong = sum(1 for a, b in pairs if (x[a] < x[b]) != (y[a] < y[b]))
    return wrong / len(pairs)
