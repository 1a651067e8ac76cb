"""Pareto sorting and hypervolume against brute force on random point sets (issue 6)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rs_search.selection.pareto import (
    crowding_distance,
    dominates,
    hypervolume,
    non_dominated_rank,
    pareto_front,
    selection_order,
)

DIRS = {
    2: [("maximize", "minimize"), ("minimize", "minimize"), ("maximize", "maximize")],
    3: [("maximize", "minimize", "minimize"), ("minimize", "maximize", "minimize")],
}


def _brute_dominates(a, b, directions) -> bool:
    better = False
    for x, y, d in zip(a, b, directions, strict=True):
        if d == "maximize":
            x, y = -x, -y
        if x > y:
            return False
        if x < y:
            better = True
    return better


def _brute_ranks(points, directions) -> list[int]:
    """Peel fronts one by one with the plain definition."""
    remaining = set(range(len(points)))
    ranks = [-1] * len(points)
    rank = 0
    while remaining:
        front = {
            i
            for i in remaining
            if not any(_brute_dominates(points[j], points[i], directions) for j in remaining)
        }
        for i in front:
            ranks[i] = rank
        remaining -= front
        rank += 1
    return ranks


def _brute_hv(points, directions, reference) -> float:
    """Count unit cells of an integer grid dominated by at least one point."""
    m = len(directions)
    flip = [d == "maximize" for d in directions]
    pts = [[-v if f else v for v, f in zip(p, flip, strict=True)] for p in points]
    ref = [-v if f else v for v, f in zip(reference, flip, strict=True)]
    lows = [min([p[k] for p in pts] + [ref[k]]) for k in range(m)]
    count = 0
    for cell in itertools.product(*[range(int(lows[k]), int(ref[k])) for k in range(m)]):
        # cell [c, c+1)^m is dominated when some point p <= c in every coordinate
        if any(all(p[k] <= cell[k] for k in range(m)) for p in pts):
            count += 1
    return float(count)


points_2d = st.lists(st.tuples(st.integers(0, 9), st.integers(0, 9)), min_size=0, max_size=25)
points_3d = st.lists(
    st.tuples(st.integers(0, 6), st.integers(0, 6), st.integers(0, 6)), min_size=0, max_size=15
)


@settings(max_examples=150, deadline=None)
@given(points=points_2d, which=st.integers(0, 2))
def test_ranks_match_brute_force_2d(points, which):
    directions = DIRS[2][which]
    assert non_dominated_rank(points, directions).tolist() == _brute_ranks(points, directions)


@settings(max_examples=100, deadline=None)
@given(points=points_3d, which=st.integers(0, 1))
def test_ranks_match_brute_force_3d(points, which):
    directions = DIRS[3][which]
    assert non_dominated_rank(points, directions).tolist() == _brute_ranks(points, directions)
    front = pareto_front(points, directions).tolist()
    assert front == [i for i, r in enumerate(_brute_ranks(points, directions)) if r == 0]


@settings(max_examples=150, deadline=None)
@given(points=points_2d, which=st.integers(0, 2))
def test_hypervolume_2d_matches_grid_count(points, which):
    directions = DIRS[2][which]
    reference = [(-1 if d == "maximize" else 10) for d in directions]
    assert hypervolume(points, directions, reference) == pytest.approx(
        _brute_hv(points, directions, reference)
    )


@settings(max_examples=60, deadline=None)
@given(points=points_3d, which=st.integers(0, 1))
def test_hypervolume_3d_matches_grid_count(points, which):
    directions = DIRS[3][which]
    reference = [(-1 if d == "maximize" else 7) for d in directions]
    assert hypervolume(points, directions, reference) == pytest.approx(
        _brute_hv(points, directions, reference)
    )


def test_hypervolume_ignores_points_beyond_reference():
    # top-1 up, latency down; reference (0.5, 10 ms)
    pts = [(0.9, 5.0), (0.4, 1.0), (0.95, 12.0)]
    assert hypervolume(pts, ("maximize", "minimize"), (0.5, 10.0)) == pytest.approx(0.4 * 5.0)


def test_random_float_points_against_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(30):
        pts = rng.normal(size=(40, 3)).round(1)
        dirs = ("maximize", "minimize", "minimize")
        assert non_dominated_rank(pts, dirs).tolist() == _brute_ranks(pts.tolist(), dirs)


def test_dominates_and_directions():
    assert dominates((0.9, 1.0), (0.8, 1.0), ("maximize", "minimize"))
    assert not dominates((0.9, 1.0), (0.9, 1.0), ("maximize", "minimize"))
    assert not dominates((0.9, 2.0), (0.8, 1.0), ("maximize", "minimize"))
    with pytest.raises(ValueError):
        non_dominated_rank([(1, 2)], ("up", "down"))
    with pytest.raises(ValueError):
        non_dominated_rank([(1, float("nan"))], ("maximize", "minimize"))


def test_crowding_distance_boundaries_and_interior():
    pts = [(0.0, 4.0), (1.0, 3.0), (3.0, 1.0), (4.0, 0.0)]
    d = crowding_distance(pts, ("minimize", "minimize"))
    assert np.isinf(d[0]) and np.isinf(d[3])
    # interior: (3-0)/4 + (4-1)/4 for point 1; (4-1)/4 + (3-0)/4 for point 2
    assert d[1] == pytest.approx(1.5) and d[2] == pytest.approx(1.5)


def test_selection_order_rank_then_crowding():
    dirs = ("maximize", "minimize")
    pts = [(0.5, 5.0), (0.9, 9.0), (0.7, 7.0), (0.1, 1.0), (0.6, 8.0)]
    order = selection_order(pts, dirs).tolist()
    ranks = non_dominated_rank(pts, dirs)
    assert [ranks[i] for i in order] == sorted(ranks.tolist())
    # the front's extremes (0.9 @ 9 ms, 0.1 @ 1 ms) come before its interior points
    assert set(order[:2]) == {1, 3}
    assert order[-1] == 4  # the only dominated point
