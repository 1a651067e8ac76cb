"""Which trials are exported, and why each one is on the Pareto front.

A trial is exportable when it completed, was trained and is feasible (``TrialRecord.usable``:
not ``rejected`` by a hard limit, every ``trial.set_constraint`` value <= 0) and carries its
candidate. Among those the Pareto front (``selection.pareto``, the study's objectives and
directions) is exported, ordered by hypervolume contribution (``selection.ties``). The reason a
trial is on the front is said in the objectives' own terms: for accuracy/latency, "the most
accurate at <= its latency".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from rs_search.selection.pareto import pareto_front
from rs_search.selection.ties import default_reference, hypervolume_contribution

if TYPE_CHECKING:
    from rs_search.study.record import TrialRecord

__all__ = ["FrontEntry", "exportable", "front_entries"]

_UNITS = {
    "accuracy": ("top-1", "%"),
    "latency": ("latency", " ms"),
    "memory": ("peak memory", " MB"),
}


@dataclass(frozen=True, kw_only=True)
class FrontEntry:
    record: TrialRecord
    values: tuple[float, ...]
    reason: str
    hypervolume_contribution: float
    reference: tuple[float, ...]  # the hypervolume reference point, in the objectives' units


def exportable(record: TrialRecord) -> bool:
    """Complete, trained, feasible and carrying an rs-search candidate."""
    return record.usable and record.candidate is not None


def _fmt(objective: str, value: float) -> str:
    name, unit = _UNITS.get(objective, (objective, ""))
    return f"{name} {value:.4g}{unit}"


def _better(direction: str) -> str:
    return "higher" if direction == "maximize" else "lower"


def _reason(i: int, pts: np.ndarray, objectives: Sequence[str], directions: Sequence[str]) -> str:
    """Why point ``i`` is non-dominated, in words, plus the extremes it holds."""
    words = [_fmt(o, float(pts[i, k])) for k, o in enumerate(objectives)]
    parts = [
        f"non-dominated ({', '.join(words)}): no finished trial is at least as good in "
        f"{' and '.join(_UNITS.get(o, (o, ''))[0] for o in objectives)} and better in one"
    ]
    if len(objectives) == 2:
        a, b = 0, 1  # "the best a at no worse b"
        worse_ok = pts[:, b] <= pts[i, b] if directions[b] == "minimize" else pts[:, b] >= pts[i, b]
        peers = int(worse_ok.sum()) - 1
        side = "<=" if directions[b] == "minimize" else ">="
        name_a = _UNITS.get(objectives[a], (objectives[a], ""))[0]
        name_b, unit_b = _UNITS.get(objectives[b], (objectives[b], ""))
        parts.append(
            f"the {_better(directions[a])} {name_a} among the {peers + 1} exportable "
            f"trial(s) at {name_b} {side} {pts[i, b]:.4g}{unit_b}"
        )
    for k, o in enumerate(objectives):
        col = pts[:, k]
        best = col.max() if directions[k] == "maximize" else col.min()
        if pts[i, k] == best:
            name = _UNITS.get(o, (o, ""))[0]
            parts.append(f"best {name} of the study")
    return "; ".join(parts)


def front_entries(
    records: Sequence[TrialRecord], objectives: Sequence[str], directions: Sequence[str]
) -> list[FrontEntry]:
    """The exportable Pareto front of ``records``, largest hypervolume contribution first."""
    pool = [r for r in records if exportable(r)]
    if not pool:
        return []
    pts = np.asarray([r.point(objectives) for r in pool], dtype=float)
    front = [int(i) for i in pareto_front(pts, directions)]
    sub = pts[front]
    reference = default_reference(pts, directions)
    contribution = hypervolume_contribution(sub, directions, reference)
    order = sorted(range(len(front)), key=lambda j: (-contribution[j], pool[front[j]].number))
    return [
        FrontEntry(
            record=pool[front[j]],
            values=tuple(float(v) for v in sub[j]),
            reason=_reason(front[j], pts, objectives, directions),
            hypervolume_contribution=float(contribution[j]),
            reference=tuple(float(r) for r in reference),
        )
        for j in order
    ]
