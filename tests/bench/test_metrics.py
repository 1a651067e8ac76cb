"""Metrics over a table: hypervolume (ours against moocore), true front, rank agreement, and the
share of the true front that halving prunes (hand-computed cases and the search's own rule)."""

from __future__ import annotations

import math

import moocore
import numpy as np
import pytest

from rs_search.bench.metrics import (
    DIRECTIONS,
    front_lost_to_halving,
    hypervolume,
    hypervolume_fraction,
    kendall_tau,
    rank_agreement,
    reference_point,
    successive_halving,
    true_front,
)
from tests.bench.helpers import make_table


def test_hypervolume_by_hand() -> None:
    # top-1 up, latency down; reference (70 %, 3 ms): 20 x 1 + 10 x 1
    assert hypervolume([[90.0, 2.0], [80.0, 1.0]], (70.0, 3.0)) == pytest.approx(30.0)
    # a dominated point and a point beyond the reference add nothing
    points = [[90.0, 2.0], [80.0, 1.0], [85.0, 2.5], [95.0, 4.0]]
    assert hypervolume(points, (70.0, 3.0)) == pytest.approx(30.0)
    assert hypervolume(np.zeros((0, 2)), (70.0, 3.0)) == 0.0


@pytest.mark.parametrize("seed", range(20))
def test_hypervolume_agrees_with_moocore(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 60))
    top1 = rng.uniform(10, 99, n)
    latency = rng.lognormal(0.0, 1.0, n)
    if seed % 4 == 0:  # ties, as categorical spaces give
        top1 = np.round(top1, 0)
        latency = np.round(latency, 1) + 0.1
    points = np.column_stack([top1, latency])
    ref = reference_point(points)
    expected = moocore.hypervolume(points, ref=list(ref), maximise=[True, False])
    assert hypervolume(points, ref) == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_reference_point_lies_beyond_every_point() -> None:
    points = np.array([[90.0, 2.0], [80.0, 1.0], [60.0, 5.0]])
    top1, latency = reference_point(points)
    assert top1 == pytest.approx(60.0 - 3.0) and latency == pytest.approx(5.0 + 0.4)
    assert reference_point([[50.0, 2.0]]) == pytest.approx((45.0, 2.2))


CURVES = [
    [10.0, 50.0, 90.0],  # 0: best, slow
    [60.0, 70.0, 80.0],  # 1: good, medium
    [70.0, 72.0, 75.0],  # 2: dominated by 1 at the end (slower, less accurate)
    [20.0, 30.0, 60.0],  # 3: fast
    [5.0, 10.0, 20.0],  # 4: slow and poor
]
LATENCY = [4.0, 2.0, 3.0, 1.0, 5.0]


def test_true_front_and_fractions() -> None:
    table = make_table(CURVES, LATENCY)
    front = true_front(table)
    assert [e.final_top1 for e in front] == [90.0, 80.0, 60.0]
    done = table.done
    all_points = [[e.final_top1, e.latency.median_ms] for e in done if e.latency]
    assert hypervolume_fraction(all_points, table) == pytest.approx(1.0)
    front_points = [[e.final_top1, e.latency.median_ms] for e in front if e.latency]
    assert hypervolume_fraction(front_points, table) == pytest.approx(1.0)
    # the reference is (20 - 7, 5 + 0.4) = (13, 5.4); the front's area by hand:
    # (90-13)(5.4-4) + (80-13)(4-2) + (60-13)(2-1) = 107.8 + 134 + 47 = 288.8
    one = hypervolume_fraction([[80.0, 2.0]], table)
    assert one == pytest.approx((80 - 13) * (5.4 - 2) / 288.8)
    assert hypervolume_fraction([[20.0, 5.0]], table) == pytest.approx(7 * 0.4 / 288.8)


def test_rank_agreement_by_hand() -> None:
    table = make_table(CURVES, LATENCY)
    by_epoch = {a.epoch: a for a in rank_agreement(table)}
    assert set(by_epoch) == {1, 2}
    # epoch 2 orders 2 > 1 > 0 > 3 > 4, the end 0 > 1 > 2 > 3 > 4: 3 of 10 pairs disagree
    assert by_epoch[2].tau == pytest.approx((7 - 3) / 10) and by_epoch[2].n == 5
    # epoch 1 orders 2 > 1 > 3 > 0 > 4: 0 is out of place against 1, 2 and 3, and 2 against 1
    assert by_epoch[1].tau == pytest.approx((6 - 4) / 10)
    assert rank_agreement(table, [3])[0].tau == pytest.approx(1.0)
    with pytest.raises(ValueError, match="outside the table"):
        rank_agreement(table, [4])


def test_kendall_tau_edge_cases() -> None:
    assert kendall_tau([1, 2, 3], [3, 2, 1])[0] == pytest.approx(-1.0)
    assert math.isnan(kendall_tau([1], [1])[0])
    assert math.isnan(kendall_tau([1, 1, 1], [1, 2, 3])[0])


def test_successive_halving_by_hand() -> None:
    # nine candidates of one latency: at the rung only top-1 orders them; the final winner (0)
    # is the worst at epoch 1 and is pruned there; the top 3 at epoch 1 continue
    top1_at_1 = [1.0, 9.0, 8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0]
    final = [99.0, 90.0, 80.0, 70.0, 60.0, 50.0, 40.0, 30.0, 20.0]
    curves = np.column_stack([top1_at_1, final])
    pruned = successive_halving(curves, np.ones(9), rungs=[1], eta=3)
    assert pruned.tolist() == [1, 0, 0, 0, 1, 1, 1, 1, 1]
    exempt = np.zeros(9, dtype=bool)
    exempt[0] = True
    pruned = successive_halving(curves, np.ones(9), rungs=[1], eta=3, exempt=exempt)
    assert pruned.tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 1]


def test_successive_halving_cascades_over_rungs() -> None:
    rng = np.random.default_rng(0)
    curves = np.sort(rng.uniform(0, 100, (27, 9)), axis=1)
    pruned = successive_halving(curves, rng.uniform(1, 5, 27), rungs=[1, 3], eta=3)
    assert (pruned == 1).sum() == 27 - 9 and (pruned == 3).sum() == 9 - 3
    assert (pruned == 0).sum() == 3


def test_first_rung_matches_the_searchs_decide() -> None:
    from rs_search.search.halving import decide

    rng = np.random.default_rng(1)
    for _ in range(10):
        n = int(rng.integers(2, 30))
        top1 = np.round(rng.uniform(0, 100, n), 0)  # ties included
        latency = np.round(rng.uniform(1, 4, n), 1)
        points = np.column_stack([top1, latency])
        pruned = successive_halving(np.column_stack([top1, top1]), latency, rungs=[1], eta=3)
        for me in range(n):
            decision = decide(points.tolist(), me, directions=DIRECTIONS, eta=3, epoch=1)
            assert decision.keep == (pruned[me] == 0)


def test_front_lost_to_halving() -> None:
    table = make_table(CURVES, LATENCY)
    # eta 2 at epoch 1: the rung's front is 1 (60 %, 2 ms), 2 (70 %, 3 ms) and 3 (20 %, 1 ms);
    # its two places go to the ends of that front (infinite crowding distance): 2 and 3.
    # With seeds exempt (the quickstart's three seeds are the table's first three candidates,
    # 0, 1 and 2) every front member continues anyway.
    loss = front_lost_to_halving(table, rungs=[1], eta=2)
    assert [e.final_top1 for e in loss.front] == [90.0, 80.0, 60.0]
    assert loss.pruned == ()
    assert loss.share == 0.0
    loss = front_lost_to_halving(table, rungs=[1], eta=2, exempt_seeds=False)
    # without exemptions 0 (dominated at the rung) and 1 (inside the rung's front) are pruned
    assert [(e.final_top1, epoch) for e, epoch in loss.pruned] == [(90.0, 1), (80.0, 1)]
    assert loss.share == pytest.approx(2 / 3)
