"""Data step of the scaling curves: top-1 against FLOPs or latency, one line per depth, per width
and per resolution, split by training budget.

This is the shape of Bello et al. (2021), Fig. 3 and Sec. 7: which dimension pays off depends on
the regime. At 10 epochs wider nets win and depth hardly helps; at 350 epochs depth wins and width
starts to overfit; resolution pays off slowly either way. One line joins the trials that share a
value of the dimension (for example every depth-101 trial), sorted along the x axis; where several
trials share an x (same architecture, other recipes) the line keeps the best top-1.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from rs_search.reports.complexity import flops_scale
from rs_search.specs import ArchSpec, layout_label
from rs_search.study.record import TrialRecord, curve_series

Dimension = Literal["depth", "width", "resolution"]
XKind = Literal["flops", "latency"]
DIMENSIONS: tuple[Dimension, ...] = ("depth", "width", "resolution")


@dataclass(frozen=True, kw_only=True)
class ScalingLine:
    dimension: Dimension
    group: str  # "101", "w1.5", "r192"
    budget_epochs: int
    x: tuple[float, ...]
    top1: tuple[float, ...]
    numbers: tuple[int, ...]  # the trial behind each point


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
    if dimension == "depth":
        return layout_label(arch.layout)
    if dimension == "width":
        return f"w{arch.width:g}"
    return f"r{arch.resolution}"


def _group_sort_key(arch: ArchSpec, dimension: Dimension) -> float:
    if dimension == "depth":
        return float(sum(arch.layout))
    return float(arch.width if dimension == "width" else arch.resolution)


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


def scaling_data(
    records: Sequence[TrialRecord],
    *,
    x_kind: XKind = "flops",
    flops: Callable[[ArchSpec], int] | None = None,
) -> ScalingData:
    if x_kind == "flops" and flops is None:
        from rs_search.models.complexity import count_flops

        flops = count_flops
    points: list[tuple[TrialRecord, ArchSpec, int, float, float]] = []
    for record in records:
        budget = training_budget(record)
        measured = _point(record)
        if measured is None or record.arch is None or budget is None:
            continue
        top1, latency = measured
        x = float(flops(record.arch)) if flops is not None and x_kind == "flops" else latency
        points.append((record, record.arch, budget, x, top1))
    label = "latency (ms)"
    if x_kind == "flops":
        divisor, label = flops_scale([x for *_, x, _ in points])
        points = [(r, a, b, x / divisor, t) for r, a, b, x, t in points]
    lines: list[ScalingLine] = []
    budgets = sorted({budget for _, _, budget, _, _ in points})
    for dimension in DIMENSIONS:
        for budget in budgets:
            groups: dict[str, list[tuple[TrialRecord, ArchSpec, int, float, float]]] = {}
            for point in points:
                if point[2] == budget:
                    groups.setdefault(group_of(point[1], dimension), []).append(point)
            ordered = sorted(groups.items(), key=lambda kv: _group_sort_key(kv[1][0][1], dimension))
            for group, members in ordered:
                best: dict[float, tuple[float, int]] = {}
                for record, _, _, x, top1 in members:
                    if x not in best or top1 > best[x][0]:
                        best[x] = (top1, record.number)
                xs = sorted(best)
                lines.append(
                    ScalingLine(
                        dimension=dimension,
                        group=group,
                        budget_epochs=budget,
                        x=tuple(xs),
                        top1=tuple(best[x][0] for x in xs),
                        numbers=tuple(best[x][1] for x in xs),
                    )
                )
    return ScalingData(x_kind=x_kind, x_label=label, budgets=tuple(budgets), lines=tuple(lines))
