"""Non-dominated sorting, hypervolume and crowding distance: pure functions over arrays.

A search keeps two or three objectives (validation top-1 up, latency down, optionally memory
down), so everything here takes ``points`` of shape ``(n, m)`` with ``m`` in {2, 3} (sorting and
crowding work for any ``m``) and one direction per column (``"maximize"`` or ``"minimize"``,
Optuna's ``StudyDirection`` is accepted too). Internally every column is turned into a
minimisation by negating the maximised ones, so the definitions are the textbook ones:

- ``a`` dominates ``b`` when ``a`` is no worse in every objective and better in at least one
  (Deb et al. 2002, "A fast and elitist multiobjective genetic algorithm: NSGA-II", Sec. III-A);
- the non-dominated rank is 0 for the Pareto front, 1 for the front once rank 0 is removed, ...;
- crowding distance is NSGA-II's (Sec. III-B): per objective, the normalised gap between a
  point's neighbours, boundary points infinite; it breaks ties between equally ranked points in
  favour of the ones in sparse regions of the front;
- hypervolume is the Lebesgue measure of the region dominated by the points and bounded by a
  reference point (Zitzler & Thiele 1998); points that do not strictly improve on the reference
  in every objective contribute nothing.

Successive halving (``rs_search.search.halving``) ranks trials at a rung with
``non_dominated_rank`` and ``crowding_distance``; reports and export read ``pareto_front`` and
``hypervolume``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "crowding_distance",
    "dominates",
    "hypervolume",
    "non_dominated_rank",
    "pareto_front",
    "selection_order",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def _sign(direction: Any) -> float:
    name = getattr(direction, "name", direction)
    name = str(name).lower()
    if name in ("maximize", "max"):
        return -1.0
    if name in ("minimize", "min"):
        return 1.0
    raise ValueError(f"direction {direction!r}: allowed: 'maximize', 'minimize'")


def _as_minimization(points: npt.ArrayLike, directions: Sequence[Any]) -> FloatArray:
    """``points`` as a float ``(n, m)`` array in which every column is minimised."""
    arr = np.asarray(points, dtype=np.float64)
    if arr.ndim == 1 and arr.size == 0:
        arr = arr.reshape(0, len(directions))
    if arr.ndim != 2:
        raise ValueError(f"points must be a 2-D array (n, m); got shape {arr.shape}")
    if arr.shape[1] != len(directions):
        raise ValueError(f"{arr.shape[1]} objectives but {len(directions)} directions")
    if np.isnan(arr).any():
        raise ValueError("points contain NaN; drop or replace them before sorting")
    signs = np.array([_sign(d) for d in directions], dtype=np.float64)
    return arr * signs


def dominates(a: npt.ArrayLike, b: npt.ArrayLike, directions: Sequence[Any]) -> bool:
    """True when ``a`` is no worse than ``b`` in every objective and better in at least one."""
    pa, pb = _as_minimization(
        np.stack([np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)]), directions
    )
    return bool(np.all(pa <= pb) and np.any(pa < pb))


def non_dominated_rank(points: npt.ArrayLike, directions: Sequence[Any]) -> IntArray:
    """Front index of each point: 0 for the Pareto front, 1 for the next front, and so on.

    Deb et al.'s fast non-dominated sort, O(m n^2): fine for the hundreds of trials of a study.
    Equal points share a rank (neither dominates the other).
    """
    p = _as_minimization(points, directions)
    n = p.shape[0]
    ranks = np.full(n, -1, dtype=np.int64)
    if n == 0:
        return ranks
    # dom[i, j]: i dominates j.
    le = np.all(p[:, None, :] <= p[None, :, :], axis=2)
    lt = np.any(p[:, None, :] < p[None, :, :], axis=2)
    dom = le & lt
    dominated_by = dom.sum(axis=0)  # how many points dominate j
    front = np.flatnonzero(dominated_by == 0)
    rank = 0
    while front.size:
        ranks[front] = rank
        # Removing this front lowers the count of everything it dominates.
        dominated_by = dominated_by - dom[front].sum(axis=0)
        dominated_by[ranks >= 0] = -1
        front = np.flatnonzero(dominated_by == 0)
        rank += 1
    assert (ranks >= 0).all()
    return ranks


def pareto_front(points: npt.ArrayLike, directions: Sequence[Any]) -> IntArray:
    """Indices of the non-dominated points (rank 0), in input order."""
    return np.flatnonzero(non_dominated_rank(points, directions) == 0).astype(np.int64)


def crowding_distance(points: npt.ArrayLike, directions: Sequence[Any]) -> FloatArray:
    """NSGA-II crowding distance of each point within ``points`` (usually one front).

    Per objective the points are sorted, the two extremes get ``inf`` and every other point adds
    ``(next - previous) / (max - min)``. An objective where all points are equal adds nothing.
    Directions do not change the result (distances are symmetric); they are taken for a uniform
    signature and validation.
    """
    p = _as_minimization(points, directions)
    n, m = p.shape
    distance = np.zeros(n, dtype=np.float64)
    if n <= 2:
        distance[:] = np.inf
        return distance
    for k in range(m):
        order = np.argsort(p[:, k], kind="stable")
        col = p[order, k]
        span = col[-1] - col[0]
        distance[order[0]] = np.inf
        distance[order[-1]] = np.inf
        if span == 0:
            continue
        distance[order[1:-1]] += (col[2:] - col[:-2]) / span
    return distance


def selection_order(points: npt.ArrayLike, directions: Sequence[Any]) -> IntArray:
    """Indices from best to worst: by non-dominated rank, then by crowding distance within a
    rank (larger first), then by input position (stable). This is NSGA-II's crowded-comparison
    order; successive halving keeps the first ``n // eta`` of it."""
    p = np.asarray(points, dtype=np.float64)
    n = p.shape[0] if p.ndim == 2 else 0
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    ranks = non_dominated_rank(p, directions)
    crowd = np.zeros(n, dtype=np.float64)
    for r in np.unique(ranks):
        members = np.flatnonzero(ranks == r)
        crowd[members] = crowding_distance(p[members], directions)
    # lexsort: last key is primary.
    return np.lexsort((np.arange(n), -crowd, ranks)).astype(np.int64)


def hypervolume(
    points: npt.ArrayLike, directions: Sequence[Any], reference: Sequence[float]
) -> float:
    """Hypervolume dominated by ``points`` and bounded by ``reference``, for 2 or 3 objectives.

    ``reference`` is given in the objectives' own units and directions (for top-1 up and latency
    down, e.g. ``(0.0, 100.0)``: zero accuracy, 100 ms). Points that do not strictly improve on the
    reference in every objective are ignored. Exact: a sweep in 2-D, slices along the third
    objective in 3-D (O(n^2 log n), fine for a study's front).
    """
    p = _as_minimization(points, directions)
    ref = _as_minimization([list(reference)], directions)[0]
    m = p.shape[1]
    if m not in (2, 3):
        raise ValueError(f"hypervolume supports 2 or 3 objectives, got {m}")
    p = p[np.all(p < ref, axis=1)]
    if p.shape[0] == 0:
        return 0.0
    if m == 2:
        return _hv2(p, ref)
    # 3-D: sweep the third objective; between consecutive levels the dominated cross-section
    # is the 2-D hypervolume of the points at or below that level.
    order = np.argsort(p[:, 2], kind="stable")
    p = p[order]
    levels = np.append(p[:, 2], ref[2])
    volume = 0.0
    for i in range(p.shape[0]):
        height = levels[i + 1] - levels[i]
        if height > 0:
            volume += _hv2(p[: i + 1, :2], ref[:2]) * height
    return float(volume)


def _hv2(p: FloatArray, ref: FloatArray) -> float:
    """2-D hypervolume of minimisation points that all improve on ``ref``."""
    order = np.lexsort((p[:, 1], p[:, 0]))
    area = 0.0
    best_y = ref[1]
    for x, y in p[order]:
        if y < best_y:
            area += (ref[0] - x) * (best_y - y)
            best_y = y
    return float(area)
