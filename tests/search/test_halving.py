"""Successive-halving arithmetic and the Pareto-aware promotion rule (pure functions)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rs_search.search import halving
from rs_search.study.record import TrialRecord
from rs_search.study.settings import rung_epochs


def record(**fields: object) -> TrialRecord:
    return TrialRecord(number=0, state="RUNNING", **fields)  # type: ignore[arg-type]


def test_rungs_are_budget_over_powers_of_eta():
    assert rung_epochs(12, eta=3) == (1, 4)
    assert rung_epochs(9, eta=3) == (1, 3)
    assert rung_epochs(350, eta=3, min_rung=13) == (13, 39, 117)
    assert rung_epochs(100, eta=2, min_rung=10) == (12, 25, 50)
    assert rung_epochs(1, eta=3) == ()
    assert halving.default_min_rung(350, eta=3) == 13
    assert halving.default_min_rung(12, eta=3) == 1
    # past the LR warm-up: no rung judges trials that have not reached the peak LR
    assert halving.default_min_rung(12, eta=3, warmup_epochs=1) == 2
    assert rung_epochs(12, eta=3, min_rung=2) == (4,)
    assert halving.default_min_rung(350, eta=3, warmup_epochs=5) == 13
    assert halving.default_min_rung(30, eta=3, warmup_epochs=5) == 6


def test_a_study_s_default_lowest_rung_clears_its_space_s_longest_warmup():
    from rs_search.search.settings import settings_from_space
    from rs_search.space import load_space
    from tests.search.conftest import MICRO

    quickstart = load_space(Path(__file__).resolve().parents[2] / "spaces" / "quickstart.yaml")
    common = dict(
        data="digits",
        eta=3,
        min_rung=None,
        n_trials=16,
        sampler="tpe",
        seed=0,
        heartbeat_interval=30,
        grace_period=120,
        artifacts="a",
    )
    assert settings_from_space(quickstart, budget_epochs=12, **common).rungs == (4,)
    assert settings_from_space(load_space(MICRO), budget_epochs=12, **common).rungs == (1, 4)
    given = {**common, "min_rung": 1}
    assert settings_from_space(quickstart, budget_epochs=12, **given).rungs == (1, 4)
    with pytest.raises(ValueError):
        rung_epochs(12, eta=1)


def test_expected_epochs():
    assert halving.expected_epochs(16, 12, (), None) == 192
    # 16 x 1 + 16/3 x 3 + 16/9 x 8
    assert halving.expected_epochs(16, 12, (1, 4), 3) == pytest.approx(16 + 16 + 128 / 9)
    assert halving.expected_epochs(16, 12, (1, 4), 3) <= 192 / 2


def test_first_trial_at_a_rung_continues():
    d = halving.decide([[50.0, 3.0]], 0, directions=("maximize", "minimize"), eta=3, epoch=1)
    assert d.keep and d.kept == 1 and d.field_size == 1


def test_dominated_trial_is_pruned_and_front_kept():
    dirs = ("maximize", "minimize")
    # (top-1, latency): 0 and 2 are on the front, 1 is dominated by 0
    pts = [[90.0, 2.0], [80.0, 3.0], [95.0, 9.0]]
    assert not halving.decide(pts, 1, directions=dirs, eta=3, epoch=4).keep
    # with 6 points, the top 2 continue: both extremes of the front
    pts6 = [[90.0, 2.0], [80.0, 3.0], [95.0, 9.0], [70.0, 5.0], [60.0, 8.0], [85.0, 4.0]]
    kept = [i for i in range(6) if halving.decide(pts6, i, directions=dirs, eta=3, epoch=4).keep]
    assert kept == [0, 2]


def test_fast_but_less_accurate_candidate_survives():
    """Latency counts: the quickest net continues although four nets are more accurate."""
    dirs = ("maximize", "minimize")
    pts = [[96.0, 10.0], [95.0, 11.0], [94.0, 12.0], [93.0, 13.0], [70.0, 1.0], [60.0, 14.0]]
    assert halving.decide(pts, 4, directions=dirs, eta=3, epoch=1).keep
    assert not halving.decide(pts, 1, directions=dirs, eta=3, epoch=1).keep


def test_both_ends_of_a_front_continue_once_there_are_two_places():
    dirs = ("maximize", "minimize")
    # front: (99, 9) most accurate, (90, 5) middle, (80, 1) fastest; the rest dominated
    pts = [[90.0, 5.0], [99.0, 9.0], [80.0, 1.0], [89.0, 5.5], [88.0, 6.0], [87.0, 6.5]]
    keep = [halving.decide(pts, i, directions=dirs, eta=3, epoch=1).keep for i in range(6)]
    assert keep == [False, True, True, False, False, False]


def test_a_seed_is_never_pruned_but_keeps_its_place():
    field = [[99.0, 3.0], [98.0, 3.5], [97.0, 4.0]]  # the first dominates the other two
    d = halving.decide(field, 2, directions=("maximize", "minimize"), eta=3, epoch=4)
    assert not d.keep and d.rank == 2
    s = halving.exempt(d, halving.exemption(record(seed_name="small", origin="seed")) or "")
    assert s.keep and (s.position, s.rank, s.kept) == (d.position, d.rank, d.kept)
    assert s.reason().endswith("continues (a seed trains to the full budget)")
    assert s.to_dict()["exempt"] == "a seed trains to the full budget"
    kept = halving.decide(field, 0, directions=("maximize", "minimize"), eta=3, epoch=4)
    assert halving.exempt(kept, halving.SEED_EXEMPT) == kept and "exempt" not in kept.to_dict()


def test_the_estimate_counts_seeds_at_the_full_budget():
    from rs_search.search import summary
    from rs_search.search.settings import settings_from_space
    from rs_search.space import load_space

    quickstart = load_space(Path(__file__).resolve().parents[2] / "spaces" / "quickstart.yaml")
    settings = settings_from_space(
        quickstart,
        budget_epochs=12,
        data="digits",
        eta=3,
        min_rung=None,
        n_trials=16,
        sampler="tpe",
        seed=0,
        heartbeat_interval=30,
        grace_period=120,
        artifacts="a",
    )
    plain = summary.estimate(settings, trials=16, train_images=None, flops_range=None)
    seeded = summary.estimate(settings, trials=16, train_images=None, flops_range=None, seeds=3)
    assert plain.expected_epochs == pytest.approx(16 * 4 + 16 / 3 * 8)
    assert seeded.expected_epochs == pytest.approx(3 * 12 + 13 * 4 + 13 / 3 * 8)
    assert seeded.full_epochs == plain.full_epochs == 192


def test_a_rule_proposal_is_never_pruned():
    field = [[99.0, 3.0], [98.0, 3.5], [97.0, 4.0]]
    d = halving.decide(field, 2, directions=("maximize", "minimize"), eta=3, epoch=4)
    r = halving.exempt(d, halving.exemption(record(origin="rule:depth")) or "")
    assert halving.exemption(record()) is None  # a sampler trial may be pruned
    assert not d.keep and r.keep and r.position == d.position
    assert r.reason().endswith("continues (a scaling rule's proposal trains to the full budget)")
