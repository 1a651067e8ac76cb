"""Ordering the members of one Pareto front: hypervolume contribution, and a default reference.

``pareto.py`` says which trials are on the front; the rules and the export also need an order
among them (which trial to scale first, which one to list first). The exclusive hypervolume
contribution of a point (the hypervolume lost when it is removed; Emmerich, Beume & Naujoks
2005, SMS-EMOA) prefers points that cover a region of the trade-off no other point covers; it is
zero for duplicates. Ties on it fall back to NSGA-II's crowding distance, then input order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from rs_search.selection.pareto import crowding_distance, hypervolume, pareto_front

__all__ = ["default_reference", "front_order", "hypervolume_contribution"]


def default_reference(points: npt.ArrayLike, directions: Sequence[Any]) -> list[float]:
    """A reference point just worse than every point: per objective the worst value moved 10% of
    the objective's range (or 1 unit when all points are equal) further in the bad direction.
    Stated in the objectives' own units; exports print it beside any hypervolume."""
    arr = np.asarray(points, dtype=np.float64).reshape(-1, len(directions))
    ref: list[float] = []
    for k, direction in enumerate(directions):
        col = arr[:, k]
        if col.size == 0:
            ref.append(0.0)
            continue
        span = float(col.max() - col.min()) or 1.0
        maximize = str(getattr(direction, "name", direction)).lower() in ("maximize", "max")
        ref.append(float(col.min()) - 0.1 * span if maximize else float(col.max()) + 0.1 * span)
    return ref


def hypervolume_contribution(
    points: npt.ArrayLike, directions: Sequence[Any], reference: Sequence[float]
) -> npt.NDArray[np.float64]:
    """Exclusive hypervolume of each point: HV(all) - HV(all but this one). O(n) hypervolumes,
    fine for a front of a few dozen trials."""
    arr = np.asarray(points, dtype=np.float64).reshape(-1, len(directions))
    total = hypervolume(arr, directions, reference)
    out = np.zeros(arr.shape[0], dtype=np.float64)
    for i in range(arr.shape[0]):
        rest = np.delete(arr, i, axis=0)
        out[i] = total - hypervolume(rest, directions, reference)
    return np.maximum(out, 0.0)


def front_order(
    points: npt.ArrayLike, directions: Sequence[Any], reference: Sequence[float] | None = None
) -> list[int]:
    """Indices of the Pareto-front points, best first: larger hypervolume contribution, then
    larger crowding distance, then input order."""
    arr = np.asarray(points, dtype=np.float64).reshape(-1, len(directions))
    front = [int(i) for i in pareto_front(arr, directions)]
    if not front:
        return []
    sub = arr[front]
    ref = list(reference) if reference is not None else default_reference(arr, directions)
    contribution = hypervolume_contribution(sub, directions, ref)
    crowd = crowding_distance(sub, directions)
    order = sorted(range(len(front)), key=lambda j: (-contribution[j], -crowd[j], j))
    return [front[j] for j in order]
