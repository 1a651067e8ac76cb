"""Ordering Pareto-front members: exclusive hypervolume contribution and the default reference."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rs_search.selection.pareto import pareto_front
from rs_search.selection.ties import default_reference, front_order, hypervolume_contribution

DIRS = ("maximize", "minimize")  # top-1 up, latency down


def test_contribution_of_a_2d_staircase_is_its_own_rectangle() -> None:
    # top-1 / latency: the middle point owns the box between its neighbours.
    pts = [(70.0, 1.0), (80.0, 2.0), (90.0, 4.0)]
    ref = (60.0, 5.0)
    c = hypervolume_contribution(pts, DIRS, ref)
    # as minimisation: x = -top1. Each point's exclusive box (x_next - x) * (y_prev - y).
    assert c[0] == pytest.approx((80 - 70) * (5 - 1) - (80 - 70) * (5 - 2))  # 10 * 1 = 10
    assert c[1] == pytest.approx((80 - 70) * (4 - 2))  # 20
    assert c[2] == pytest.approx((90 - 80) * (5 - 4))  # 10


def test_dominated_and_duplicate_points_contribute_nothing() -> None:
    pts = [(80.0, 2.0), (80.0, 2.0), (70.0, 3.0), (90.0, 4.0)]
    c = hypervolume_contribution(pts, DIRS, (0.0, 10.0))
    assert c[0] == 0 and c[1] == 0  # each duplicate is covered by the other
    assert c[2] == 0  # dominated by (80, 2)
    assert c[3] > 0


def test_default_reference_is_just_worse_than_every_point() -> None:
    pts = [(70.0, 1.0), (90.0, 5.0)]
    assert default_reference(pts, DIRS) == pytest.approx([68.0, 5.4])
    assert default_reference([(50.0, 2.0)], DIRS) == pytest.approx([49.9, 2.1])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 20), st.integers(0, 20)), min_size=1, max_size=12))
def test_front_order_is_a_permutation_of_the_front(raw: list[tuple[int, int]]) -> None:
    pts = np.asarray(raw, dtype=float)
    order = front_order(pts, DIRS)
    assert sorted(order) == sorted(int(i) for i in pareto_front(pts, DIRS))
    ref = default_reference(pts, DIRS)
    contrib = hypervolume_contribution(pts[order], DIRS, ref)
    assert all(contrib[i] >= contrib[i + 1] - 1e-9 for i in range(len(order) - 1))


def test_three_objectives() -> None:
    dirs = ("maximize", "minimize", "minimize")
    pts = [(80.0, 2.0, 100.0), (85.0, 3.0, 90.0), (75.0, 1.0, 200.0), (70.0, 4.0, 300.0)]
    order = front_order(pts, dirs)
    assert 3 not in order and sorted(order) == [0, 1, 2]
