"""Data steps of the front figures: the Pareto front per hardware and hypervolume against compute.

Pure functions of trial records, no plotly: the figure steps in ``figures.py`` draw what these
return, and the tests check these directly on a constructed study.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from rs_search.selection.pareto import hypervolume, non_dominated_rank
from rs_search.study.record import (
    OBJECTIVE_WORDS,
    TrialRecord,
    compute_spent,
    directions_of,
)

#: Axis label of each objective.
AXIS_LABELS = {
    "accuracy": "val top-1 (%)",
    "latency": "latency (ms per batch)",
    "memory": "peak memory (MB)",
}


def objectives_of(records: Sequence[TrialRecord]) -> tuple[str, ...]:
    """The study's objectives as its records name their values (the contract's first two when
    no trial has values yet)."""
    for record in records:
        if record.values:
            return tuple(record.values)
    return ("accuracy", "latency")


def ranks(points: Sequence[Sequence[float]], objectives: Sequence[str]) -> list[int]:
    """Non-dominated rank of each point (values in ``objectives``' order); 0 is the front."""
    if not points:
        return []
    return [
        int(r) for r in non_dominated_rank([list(p) for p in points], directions_of(objectives))
    ]


def cost_objective(objectives: Sequence[str]) -> str:
    """The objective a 2-D front is drawn against: the first one besides accuracy."""
    return next((o for o in objectives if o != "accuracy"), "latency")


@dataclass(frozen=True, kw_only=True)
class ParetoPanel:
    """Top-1 against the cost objective (latency, or memory in a study without latency) of the
    completed, feasible trials on one hardware profile.

    ``rank`` is the non-dominated rank over every objective of the study among the completed,
    trained, feasible trials: rank 0 is exactly the set ``rs-search export`` writes
    (``rs_search.export.front``). ``front_*`` is the 2-D top-1/cost front, drawn as a staircase.
    """

    profile: str
    cost_objective: str  # "latency" or "memory"
    numbers: tuple[int, ...]
    top1: tuple[float, ...]
    cost: tuple[float, ...]
    rank: tuple[int, ...]
    hover: tuple[str, ...]
    front_cost: tuple[float, ...]
    front_top1: tuple[float, ...]

    @property
    def on_front(self) -> tuple[bool, ...]:
        return tuple(r == 0 for r in self.rank)

    @property
    def cost_label(self) -> str:
        return AXIS_LABELS.get(self.cost_objective, self.cost_objective)

    @property
    def cost_words(self) -> str:
        return OBJECTIVE_WORDS.get(self.cost_objective, self.cost_objective)


@dataclass(frozen=True, kw_only=True)
class ParetoData:
    panels: tuple[ParetoPanel, ...]


def pareto_data(
    records: Sequence[TrialRecord],
    *,
    target: str,
    other_profiles: Mapping[str, Mapping[str, float]] | None = None,
    objectives: Sequence[str] | None = None,
) -> ParetoData:
    """One panel for the study's ``target`` profile (figures from the trial values) and, when the
    study has a latency objective, one per profile in ``other_profiles`` (profile -> arch key ->
    median latency ms, from the latency cache), so a front measured on one machine can be read on
    another."""
    objectives = tuple(objectives or objectives_of(records))
    usable = [r for r in records if r.usable]
    points = [r.point(objectives) for r in usable]
    panels = [_panel(target, usable, points, objectives)]
    for profile, by_arch in sorted((other_profiles or {}).items()):
        if profile == target or "latency" not in objectives:
            continue
        rows = [r for r in usable if r.arch is not None and r.arch.key() in by_arch]
        elsewhere = [
            tuple(
                by_arch[r.arch.key()] if name == "latency" else r.point((name,))[0]
                for name in objectives
            )
            for r in rows
            if r.arch is not None
        ]
        panels.append(_panel(profile, rows, elsewhere, objectives))
    return ParetoData(panels=tuple(panels))


def _panel(
    profile: str,
    rows: Sequence[TrialRecord],
    points: Sequence[Sequence[float]],
    objectives: Sequence[str],
) -> ParetoPanel:
    x = objectives.index(cost_objective(objectives)) if len(objectives) > 1 else 0
    y = objectives.index("accuracy") if "accuracy" in objectives else 0
    pairs = [(p[y], p[x]) for p in points]
    two = (objectives[y], objectives[x])
    front = sorted(
        (cost, top1) for (top1, cost), r in zip(pairs, ranks(pairs, two), strict=True) if r == 0
    )
    return ParetoPanel(
        profile=profile,
        cost_objective=objectives[x],
        numbers=tuple(r.number for r in rows),
        top1=tuple(float(top1) for top1, _ in pairs),
        cost=tuple(float(cost) for _, cost in pairs),
        rank=tuple(ranks(points, objectives)),
        hover=tuple(r.describe() for r in rows),
        front_cost=tuple(cost for cost, _ in front),
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
    reference: tuple[float, ...]  # in the objectives' units, in their order


def hypervolume_data(
    records: Sequence[TrialRecord], *, objectives: Sequence[str] | None = None
) -> HypervolumeData:
    """Reference point: 0 for a maximized objective (top-1 %) and 1.1 x the worst value of any
    completed trial for a minimized one (latency, memory), so every completed trial adds volume
    and the curve is comparable across its length."""
    objectives = tuple(objectives or objectives_of(records))
    directions = directions_of(objectives)
    finished = sorted(
        (r for r in records if r.state in ("COMPLETE", "FAIL", "PRUNED")),
        key=lambda r: (r.datetime_complete or datetime.max, r.number),
    )
    usable = [r.point(objectives) for r in finished if r.usable]
    if not usable:
        return HypervolumeData(numbers=(), epochs=(), device_hours=(), hypervolume=(), reference=())
    reference = tuple(
        0.0 if d == "maximize" else 1.1 * max(v[i] for v in usable)
        for i, d in enumerate(directions)
    )
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
        if record.usable:
            points.append(list(record.point(objectives)))
        numbers.append(record.number)
        epochs.append(spent_epochs)
        hours.append(spent_seconds / 3600.0)
        volumes.append(hypervolume(points, directions, reference) if points else 0.0)
    return HypervolumeData(
        numbers=tuple(numbers),
        epochs=tuple(epochs),
        device_hours=tuple(hours),
        hypervolume=tuple(volumes),
        reference=reference,
    )
