"""Data steps of the front figures: the Pareto front per hardware and hypervolume against compute.

Pure functions of trial records, no plotly: the figure steps in ``figures.py`` draw what these
return, and the tests check these directly on a constructed study.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from rs_search.reports.records import DIRECTIONS, TrialRecord, compute_spent
from rs_search.selection.pareto import hypervolume, non_dominated_rank


def ranks(values: Sequence[Sequence[float]]) -> list[int]:
    """Non-dominated rank of each value vector (top-1 up, the rest down); 0 is the front."""
    if not values:
        return []
    width = min(len(v) for v in values)
    return [
        int(r) for r in non_dominated_rank([list(v[:width]) for v in values], DIRECTIONS[:width])
    ]


@dataclass(frozen=True, kw_only=True)
class ParetoPanel:
    """Top-1 against latency of the completed, feasible trials on one hardware profile.

    ``rank`` is the non-dominated rank over every objective of the study among the completed,
    trained, feasible trials: rank 0 is exactly the set ``rs-search export`` writes
    (``rs_search.export.front``). ``front_*`` is the 2-D top-1/latency front, drawn as a staircase.
    """

    profile: str
    numbers: tuple[int, ...]
    top1: tuple[float, ...]
    latency_ms: tuple[float, ...]
    rank: tuple[int, ...]
    hover: tuple[str, ...]
    front_latency_ms: tuple[float, ...]
    front_top1: tuple[float, ...]

    @property
    def on_front(self) -> tuple[bool, ...]:
        return tuple(r == 0 for r in self.rank)


@dataclass(frozen=True, kw_only=True)
class ParetoData:
    panels: tuple[ParetoPanel, ...]


def pareto_data(
    records: Sequence[TrialRecord],
    *,
    target: str,
    other_profiles: Mapping[str, Mapping[str, float]] | None = None,
) -> ParetoData:
    """One panel for the study's ``target`` profile (latency from the trial values) and one per
    profile in ``other_profiles`` (profile -> arch key -> median latency ms, from the latency
    cache), so a front measured on one machine can be read on another."""
    usable = [r for r in records if r.usable]
    panels = [_panel(target, usable, [r.values for r in usable if r.values is not None])]
    for profile, by_arch in sorted((other_profiles or {}).items()):
        if profile == target:
            continue
        rows = [r for r in usable if r.arch is not None and r.arch.key() in by_arch]
        values = [
            (r.values[0], by_arch[r.arch.key()], *r.values[2:])
            for r in rows
            if r.values is not None and r.arch is not None
        ]
        panels.append(_panel(profile, rows, values))
    return ParetoData(panels=tuple(panels))


def _panel(
    profile: str, rows: Sequence[TrialRecord], values: Sequence[Sequence[float]]
) -> ParetoPanel:
    front = sorted(
        (v[1], v[0]) for v, r in zip(values, ranks([v[:2] for v in values]), strict=True) if r == 0
    )
    return ParetoPanel(
        profile=profile,
        numbers=tuple(r.number for r in rows),
        top1=tuple(float(v[0]) for v in values),
        latency_ms=tuple(float(v[1]) for v in values),
        rank=tuple(ranks(values)),
        hover=tuple(r.describe() for r in rows),
        front_latency_ms=tuple(lat for lat, _ in front),
        front_top1=tuple(top for _, top in front),
    )


@dataclass(frozen=True, kw_only=True)
class HypervolumeData:
    """Hypervolume of the completed front after each finished trial, against the compute spent
    up to then (every finished trial's epochs count, failed and pruned ones included: they cost)."""

    numbers: tuple[int, ...]  # the trial that finished at each step
    epochs: tuple[int, ...]  # cumulative epochs trained
    device_hours: tuple[float, ...]  # cumulative epoch_seconds / 3600
    hypervolume: tuple[float, ...]
    reference: tuple[float, ...]  # in objective units: (top-1, latency[, memory])


def hypervolume_data(records: Sequence[TrialRecord]) -> HypervolumeData:
    """Reference point: 0 % top-1 and 1.1 x the worst latency (and memory) of any completed
    trial, so every completed trial adds volume and the curve is comparable across its length."""
    finished = sorted(
        (r for r in records if r.state in ("COMPLETE", "FAIL", "PRUNED")),
        key=lambda r: (r.datetime_complete or datetime.max, r.number),
    )
    usable = [r.values for r in finished if r.usable and r.values is not None]
    if not usable:
        return HypervolumeData(numbers=(), epochs=(), device_hours=(), hypervolume=(), reference=())
    width = min(len(v) for v in usable)
    width = min(width, 3)
    reference = (0.0, *(1.1 * max(v[i] for v in usable) for i in range(1, width)))
    points: list[list[float]] = []
    numbers: list[int] = []
    epochs: list[int] = []
    hours: list[float] = []
    volumes: list[float] = []
    spent = compute_spent(records)
    spent_epochs, spent_seconds = 0, 0.0
    for record in finished:
        spent_epochs += spent[record.number].epochs
        spent_seconds += spent[record.number].seconds
        if record.usable and record.values is not None:
            points.append(list(record.values[:width]))
        numbers.append(record.number)
        epochs.append(spent_epochs)
        hours.append(spent_seconds / 3600.0)
        volumes.append(hypervolume(points, DIRECTIONS[:width], reference) if points else 0.0)
    return HypervolumeData(
        numbers=tuple(numbers),
        epochs=tuple(epochs),
        device_hours=tuple(hours),
        hypervolume=tuple(volumes),
        reference=reference,
    )
