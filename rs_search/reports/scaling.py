"""Data step of the scaling curves: top-1 against FLOPs or latency, each line scaling ONE
dimension (depth, width or resolution) with everything else held fixed, split by training budget.

This is the shape of Bello et al. (2021), Fig. 3 and Sec. 7: which dimension pays off depends on
the regime. At 10 epochs wider nets win and depth hardly helps; at 350 epochs depth wins and width
starts to overfit; resolution pays off slowly either way. A line is a scaling path, as in the
paper's figure: the trials of one training budget whose architectures are equal in every field
but the line's dimension (a "depth" line at w1 r160 joins 50, 101, 152 at width 1 and 160 px),
ordered along that dimension; a group with fewer than two architectures draws no line. Where
several trials share an architecture (other recipes), the line keeps the best top-1: each model
with its best recipe found, as the paper pairs each model with its own regularization.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from rs_search.reports.complexity import flops_scale
from rs_search.specs import ArchSpec, layout_label
from rs_search.study.record import TrialRecord, curve_series

Dimension = Literal["depth", "width", "resolution"]
XKind = Literal["flops", "latency"]
DIMENSIONS: tuple[Dimension, ...] = ("depth", "width", "resolution")
# The ArchSpec field each dimension changes (``ArchSpec.to_dict`` names); every other field is
# held fixed along a line.
FIELD_OF: dict[Dimension, str] = {"depth": "layout", "width": "width", "resolution": "resolution"}


@dataclass(frozen=True, kw_only=True)
class ScalingLine:
    dimension: Dimension  # the one dimension that changes along the line
    group: str  # what is held fixed: "w1 r160" on a depth line, "50 r160" on a width line
    budget_epochs: int
    x: tuple[float, ...]
    top1: tuple[float, ...]
    numbers: tuple[int, ...]  # the trial behind each point
    archs: tuple[ArchSpec, ...]  # each point's architecture, in the line's order
    steps: tuple[str, ...]  # the dimension's value at each point: "50", "w1.5", "r192"


@dataclass(frozen=True, kw_only=True)
class ScalingData:
    x_kind: XKind
    x_label: str
    budgets: tuple[int, ...]
    lines: tuple[ScalingLine, ...]

    def lines_for(self, dimension: Dimension, budget: int) -> tuple[ScalingLine, ...]:
        return tuple(
            ln for ln in self.lines if ln.dimension == dimension and ln.budget_epochs == budget
        )


def group_of(arch: ArchSpec, dimension: Dimension) -> str:
    """The value of ``dimension`` in ``arch``, as the labels print it."""
    if dimension == "depth":
        return layout_label(arch.layout)
    if dimension == "width":
        return f"w{arch.width:g}"
    return f"r{arch.resolution}"


def held_fixed(arch: ArchSpec, dimension: Dimension) -> str:
    """Every field of ``arch`` but ``dimension``'s, as one canonical key: equal keys, equal
    architectures up to that one dimension."""
    fields: dict[str, Any] = arch.to_dict()
    del fields[FIELD_OF[dimension]]
    return json.dumps(fields, sort_keys=True)


def _dimension_value(arch: ArchSpec, dimension: Dimension) -> float:
    if dimension == "depth":
        return float(arch.depth)
    return float(arch.width if dimension == "width" else arch.resolution)


def _held_label(arch: ArchSpec, dimension: Dimension, varying: set[str]) -> str:
    """What a line holds fixed, in the short-label words: the two other scaling dimensions, plus
    any other field that differs between the study's architectures (SE ratio, stem, ...)."""
    parts = [group_of(arch, d) for d in DIMENSIONS if d != dimension]
    values = arch.to_dict()
    parts += [f"{name} {values[name]}" for name in sorted(varying)]
    return " ".join(parts)


def _point(record: TrialRecord) -> tuple[float, float] | None:
    """(top-1, latency) of a trial on the curves: a completed feasible trial's values, or the
    last validation top-1 a pruned trial reached at its rung (successive halving stops most
    trials early; at the rung's budget they are as much a measurement as a completed trial)."""
    if record.usable and record.top1 is not None and record.latency_ms is not None:
        return record.top1, record.latency_ms
    if record.state == "PRUNED" and record.feasible and record.curve:
        top1 = curve_series(record, "val_top1")[-1]
        if top1 is not None and record.latency_ms is not None:
            return top1, record.latency_ms
    return None


def training_budget(record: TrialRecord) -> int | None:
    """Epochs the reported top-1 was reached with: the curve's length when the trial has one
    (a multi-fidelity trial can stop at a rung), else its recipe's epochs."""
    return record.epochs_trained or record.budget_epochs


@dataclass(frozen=True)
class _Point:
    number: int
    arch: ArchSpec
    budget: int
    x: float
    top1: float


def _best_per_arch(points: Sequence[_Point]) -> list[_Point]:
    """One point per architecture: the best top-1 (the earliest trial on a tie)."""
    best: dict[str, _Point] = {}
    for p in points:
        key = p.arch.key()
        if key not in best or p.top1 > best[key].top1:
            best[key] = p
    return list(best.values())


def scaling_data(
    records: Sequence[TrialRecord],
    *,
    x_kind: XKind = "flops",
    flops: Callable[[ArchSpec], int] | None = None,
) -> ScalingData:
    if x_kind == "flops" and flops is None:
        from rs_search.models.complexity import count_flops

        flops = count_flops
    points: list[_Point] = []
    for record in records:
        budget = training_budget(record)
        measured = _point(record)
        if measured is None or record.arch is None or budget is None:
            continue
        top1, latency = measured
        x = float(flops(record.arch)) if flops is not None and x_kind == "flops" else latency
        points.append(_Point(record.number, record.arch, budget, x, top1))
    label = "latency (ms)"
    if x_kind == "flops":
        divisor, label = flops_scale([p.x for p in points])
        points = [_Point(p.number, p.arch, p.budget, p.x / divisor, p.top1) for p in points]
    # Fields other than the three dimensions that differ between the architectures drawn: a
    # line's label names them, so two lines never read the same.
    dicts = [p.arch.to_dict() for p in points]
    others = set(dicts[0]) - set(FIELD_OF.values()) if dicts else set()
    varying = {f for f in others if len({json.dumps(d[f]) for d in dicts}) > 1}
    lines: list[ScalingLine] = []
    budgets = sorted({p.budget for p in points})
    for dimension in DIMENSIONS:
        for budget in budgets:
            groups: dict[str, list[_Point]] = {}
            for p in _best_per_arch([p for p in points if p.budget == budget]):
                groups.setdefault(held_fixed(p.arch, dimension), []).append(p)
            found = []
            for members in groups.values():
                if len(members) < 2:
                    continue  # one architecture: nothing scales
                members.sort(key=lambda p: (_dimension_value(p.arch, dimension), p.x))
                found.append(
                    ScalingLine(
                        dimension=dimension,
                        group=_held_label(members[0].arch, dimension, varying),
                        budget_epochs=budget,
                        x=tuple(p.x for p in members),
                        top1=tuple(p.top1 for p in members),
                        numbers=tuple(p.number for p in members),
                        archs=tuple(p.arch for p in members),
                        steps=tuple(group_of(p.arch, dimension) for p in members),
                    )
                )
            lines.extend(sorted(found, key=lambda ln: (min(ln.x), ln.group)))
    return ScalingData(x_kind=x_kind, x_label=label, budgets=tuple(budgets), lines=tuple(lines))
