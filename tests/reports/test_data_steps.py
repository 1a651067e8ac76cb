"""The data step of every figure, on studies built with real Optuna (tests/reports/factory.py)."""

from __future__ import annotations

import math

import optuna
import pytest
from optuna.trial import TrialState

from rs_search.models.complexity import count_flops, count_params
from rs_search.reports.complexity import (
    complexity_data,
    discordant_share,
    flops_scale,
    spearman,
)
from rs_search.reports.curves import learning_data, proposals_data
from rs_search.reports.front import hypervolume_data, pareto_data
from rs_search.reports.scaling import scaling_data
from rs_search.study.read import study_records
from rs_search.study.record import compute_spent
from tests.reports.factory import add_trial, demo_study, make_curve, new_study, small_arch

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="module")
def records():  # type: ignore[no-untyped-def]
    return study_records(demo_study())


def by_number(records, number):  # type: ignore[no-untyped-def]
    return next(r for r in records if r.number == number)


# -- records ----------------------------------------------------------------------------------


def test_records_read_the_trial_contract(records) -> None:  # type: ignore[no-untyped-def]
    assert [r.state for r in records] == ["COMPLETE"] * 7 + ["FAIL", "RUNNING"]
    first = by_number(records, 0)
    assert first.arch == small_arch((1, 1, 1, 1), 0.25, 32)
    assert first.recipe["epochs"] == 5 and first.epochs_trained == 5
    assert first.top1 == 40.0 and first.latency_ms == 2.0 and first.memory_mb == 100.0
    assert first.usable
    infeasible = by_number(records, 6)
    assert not infeasible.feasible and not infeasible.usable
    assert by_number(records, 5).origin == "rule:depth" and by_number(records, 5).source_trial == 3
    assert not by_number(records, 7).usable and not by_number(records, 8).usable


def test_malformed_attributes_do_not_break_records() -> None:
    study = new_study()
    study.add_trial(
        optuna.trial.create_trial(
            values=[50.0, 1.0],
            user_attrs={"arch": {"layout": "nonsense"}, "curve": "not a list"},
        )
    )
    (record,) = study_records(study)
    assert record.arch is None and record.curve == () and record.label == "#0"
    assert record.usable  # values are fine: it still belongs on the front


def test_retry_does_not_count_inherited_epochs_twice() -> None:
    study = new_study()
    arch = small_arch()
    add_trial(
        study,
        arch=arch,
        epochs=10,
        values=None,
        state=TrialState.FAIL,
        curve=make_curve(4, final_val=30.0),
    )
    # Optuna's RetryHeartbeatStaleTrialCallback copies user attrs (the 4-epoch curve) into the
    # retry and records the attempt it retries; this retry resumed from the checkpoint of epoch 3.
    retry = optuna.trial.create_trial(
        values=[50.0, 1.0],
        user_attrs={"curve": make_curve(10, final_val=50.0), "resumed_from_epoch": 3},
        system_attrs={"failed_trial": 0, "retry_history": [0]},
    )
    study.add_trial(retry)
    waiting_retry = optuna.trial.create_trial(
        state=TrialState.WAITING,
        user_attrs={"curve": make_curve(4, final_val=30.0)},
        system_attrs={"failed_trial": 0, "retry_history": [0]},
    )
    study.add_trial(waiting_retry)
    spent = compute_spent(study_records(study))
    assert spent[0].epochs == 4
    assert spent[1].epochs == 7  # epochs 4..10 after resuming from epoch 3
    assert spent[2].epochs == 0  # has not run: the inherited epochs are trial 0's
    assert spent[1].seconds == pytest.approx(7 * 30.0)


# -- Pareto front -----------------------------------------------------------------------------


def test_pareto_data_marks_front_dominated_and_exported(records) -> None:  # type: ignore[no-untyped-def]
    data = pareto_data(records, target="cpu-fp32-b8")
    (panel,) = data.panels
    assert panel.profile == "cpu-fp32-b8"
    # Completed and feasible only: the infeasible #6, failed #7 and running #8 are left out.
    assert panel.numbers == (0, 1, 2, 3, 4, 5)
    front = {n for n, on in zip(panel.numbers, panel.on_front, strict=True) if on}
    assert front == {3, 4, 5}
    assert panel.rank[panel.numbers.index(0)] == 1  # dominated by #3 (same latency, better top-1)
    assert panel.cost_objective == "latency" and panel.cost_label == "latency (ms per batch)"
    assert panel.front_cost == (2.0, 3.0, 6.0)
    assert panel.front_top1 == (48.0, 55.0, 58.0)
    assert "trial #3" in panel.hover[3] and "width 0.25" in panel.hover[3]
    assert "10 epochs" in panel.hover[3]


def test_pareto_data_adds_a_panel_per_other_profile(records) -> None:  # type: ignore[no-untyped-def]
    a = small_arch((1, 1, 1, 1), 0.25, 32)
    b = small_arch((2, 2, 2, 2), 0.25, 32)
    # On the other hardware b is faster than a: the front there differs.
    other = {"gpu-bf16-b64": {a.key(): 0.9, b.key(): 0.5}}
    data = pareto_data(records, target="cpu-fp32-b8", other_profiles=other)
    assert [p.profile for p in data.panels] == ["cpu-fp32-b8", "gpu-bf16-b64"]
    gpu = data.panels[1]
    assert gpu.numbers == (0, 1, 3, 4)
    assert gpu.cost == (0.9, 0.5, 0.9, 0.5)
    assert {n for n, on in zip(gpu.numbers, gpu.on_front, strict=True) if on} == {4}


def test_pareto_data_with_a_memory_objective_uses_all_three() -> None:
    study = new_study(memory=True)
    arch = small_arch()
    add_trial(study, arch=arch, values=(50.0, 2.0, 100.0))
    add_trial(study, arch=arch, values=(50.0, 2.0, 50.0))  # dominates #0 on memory
    add_trial(study, arch=arch, values=(49.0, 1.0, 500.0))
    (panel,) = pareto_data(study_records(study), target="t").panels
    assert panel.on_front == (False, True, True)
    assert study_records(study)[1].memory_mb == 50.0


def test_pareto_data_of_an_empty_study() -> None:
    (panel,) = pareto_data([], target="t").panels
    assert panel.numbers == () and panel.front_top1 == ()


# -- hypervolume against compute --------------------------------------------------------------


def test_hypervolume_against_epochs_and_device_hours(records) -> None:  # type: ignore[no-untyped-def]
    data = hypervolume_data(records)
    # Finished trials in completion order; the running #8 has not finished.
    assert data.numbers == (0, 1, 2, 3, 4, 5, 6, 7)
    assert data.epochs == (5, 10, 15, 25, 35, 45, 55, 58)  # the failed #7 cost 3 epochs
    assert data.device_hours[-1] == pytest.approx(58 * 30.0 / 3600)
    assert data.reference == pytest.approx((0.0, 6.6))
    # Front {(48, 2 ms), (55, 3 ms), (58, 6 ms)} against (0 %, 6.6 ms): 48*1 + 55*3 + 58*0.6.
    assert data.hypervolume[-1] == pytest.approx(48 * 1 + 55 * 3 + 58 * 0.6)
    assert data.hypervolume[0] == pytest.approx(40 * 4.6)
    assert all(b >= a for a, b in zip(data.hypervolume, data.hypervolume[1:], strict=False))
    assert data.hypervolume[2] == data.hypervolume[1]  # #2 is dominated: no volume added


def test_hypervolume_of_a_study_without_results() -> None:
    data = hypervolume_data([])
    assert data.numbers == () and data.hypervolume == ()


# -- FLOPs vs latency, params vs memory -------------------------------------------------------


def test_complexity_data_pairs_proxies_with_measurements(records) -> None:  # type: ignore[no-untyped-def]
    data = complexity_data(records)
    fl = data.flops_latency
    archs = {r.arch.key(): r for r in records if r.arch is not None and r.state == "COMPLETE"}
    assert len(fl.x) == 5  # five distinct architectures measured (#6 too, though infeasible)
    for key, x, y in zip(fl.arch_keys, fl.x, fl.y, strict=True):
        record = archs[key]
        assert x == pytest.approx(count_flops(record.arch) / 1e6)  # small nets: MFLOPs
        assert y == record.latency_ms
    assert list(fl.x) == sorted(fl.x)
    assert fl.x_label == "MFLOPs (forward, 1 image)"
    assert fl.spearman == pytest.approx(spearman(list(fl.x), list(fl.y)))
    pm = data.params_memory
    assert len(pm.x) == 5
    for key, x, y in zip(pm.arch_keys, pm.x, pm.y, strict=True):
        assert x == pytest.approx(count_params(archs[key].arch) / 1e6)
        assert y == archs[key].memory_mb


def test_complexity_data_takes_memory_from_the_cache_when_trials_lack_it() -> None:
    study = new_study()
    a, b, c = small_arch((1, 1, 1, 1)), small_arch((2, 2, 2, 2)), small_arch((1, 1, 1, 1), 0.5)
    for arch in (a, b, c):
        add_trial(study, arch=arch, values=(50.0, 1.0))
    data = complexity_data(study_records(study), memory_by_arch={a.key(): 10.0, c.key(): 30.0})
    assert set(data.params_memory.arch_keys) == {a.key(), c.key()}


def test_spearman_and_discordant_pairs() -> None:
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [40, 30, 20, 10]) == pytest.approx(-1.0)
    # Monotone but not linear: rank correlation is still 1.
    assert spearman([1, 2, 3, 4], [1, 8, 27, 1000]) == pytest.approx(1.0)
    # Ties take average ranks: x ranks (1.5, 1.5, 3), y ranks (1, 2, 3) -> r = 0.866.
    assert spearman([1, 1, 2], [1, 2, 3]) == pytest.approx(math.sqrt(3) / 2)
    assert spearman([1, 2], [1, 2]) is None
    assert spearman([1, 1, 1], [1, 2, 3]) is None
    assert discordant_share([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3)
    assert discordant_share([1, 2, 3], [1, 2, 3]) == 0.0
    with pytest.raises(ValueError):
        spearman([1, 2, 3], [1, 2])


# -- scaling curves ---------------------------------------------------------------------------


def test_scaling_lines_per_dimension_and_budget(records) -> None:  # type: ignore[no-untyped-def]
    data = scaling_data(records, x_kind="latency")
    assert data.budgets == (5, 10)
    # 5 epochs: #0 (1-1-1-1 w0.25 r32), #1 (2-2-2-2 w0.25 r32), #2 (1-1-1-1 w0.5 r32).
    (depth5,) = data.lines_for("depth", 5)
    assert depth5.group == "w0.25 r32" and depth5.numbers == (0, 1)
    assert depth5.steps == ("1-1-1-1", "2-2-2-2") and depth5.x == (2.0, 3.0)
    (width5,) = data.lines_for("width", 5)
    assert width5.group == "1-1-1-1 r32" and width5.numbers == (0, 2)
    assert width5.steps == ("w0.25", "w0.5")
    assert data.lines_for("resolution", 5) == ()  # every 5-epoch trial is at 32 px
    # 10 epochs: #3, #4 as #0, #1; #5 (2-2-2-2 w0.5 r48) differs from #4 in width AND
    # resolution, so it is on no line; the infeasible #6 (1-1-1-1 w0.25 r48) is left out.
    (depth10,) = data.lines_for("depth", 10)
    assert depth10.numbers == (3, 4) and depth10.top1 == (48.0, 55.0)
    assert data.lines_for("width", 10) == () and data.lines_for("resolution", 10) == ()


def test_scaling_x_is_flops_by_default_and_keeps_the_best_recipe(records) -> None:  # type: ignore[no-untyped-def]
    study = new_study()
    arch, deeper = small_arch((1, 1, 1, 1)), small_arch((2, 2, 2, 2))
    add_trial(study, arch=arch, values=(50.0, 1.0))
    add_trial(study, arch=arch, values=(60.0, 1.0))  # same net, better recipe
    add_trial(study, arch=deeper, values=(65.0, 2.0))
    data = scaling_data(study_records(study))
    (line,) = data.lines_for("depth", 10)
    assert line.x == (
        pytest.approx(count_flops(arch) / 1e6),
        pytest.approx(count_flops(deeper) / 1e6),
    )
    assert data.x_label == "MFLOPs (forward, 1 image)"
    assert line.top1 == (60.0, 65.0) and line.numbers == (1, 2)


def test_flops_scale_follows_the_size_of_the_nets() -> None:
    assert flops_scale([5e6, 7.3e7]) == (1e6, "MFLOPs (forward, 1 image)")
    assert flops_scale([4.6e9, 2e8]) == (1e9, "GFLOPs (forward, 1 image)")  # ResNet-RS-50
    assert flops_scale([]) == (1e9, "GFLOPs (forward, 1 image)")


def test_scaling_includes_pruned_trials_at_their_rung() -> None:
    study = new_study()
    arch, wider = small_arch(), small_arch(width=0.5)
    add_trial(study, arch=arch, epochs=9, values=(60.0, 1.0))
    # Pruned at the 3-epoch rung: their top-1 there are points of the 3-epoch curves.
    for a, top1 in ((arch, 35.0), (wider, 38.0)):
        add_trial(
            study,
            arch=a,
            epochs=9,
            values=None,
            state=TrialState.PRUNED,
            latency_ms=1.0,
            curve=make_curve(3, final_val=top1),
        )
    add_trial(
        study,
        arch=wider,
        epochs=9,
        values=None,
        state=TrialState.FAIL,
        latency_ms=1.0,
        curve=make_curve(2, final_val=20.0),
    )  # failed: not a measurement
    data = scaling_data(study_records(study), x_kind="latency")
    assert data.budgets == (3, 9)
    (short,) = data.lines_for("width", 3)
    assert short.top1 == (pytest.approx(35.0), pytest.approx(38.0)) and short.numbers == (1, 2)
    assert data.lines_for("width", 9) == ()  # one architecture at 9 epochs: no line


def test_scaling_budget_is_the_epochs_actually_trained() -> None:
    study = new_study()
    # A multi-fidelity trial stopped at the 3-epoch rung reports what it reached at epoch 3.
    add_trial(
        study, arch=small_arch(), epochs=9, values=(40.0, 1.0), curve=make_curve(3, final_val=40.0)
    )
    assert scaling_data(study_records(study), x_kind="latency").budgets == (3,)


# -- learning curves and proposals ------------------------------------------------------------


def test_learning_data_front_first_with_gap(records) -> None:  # type: ignore[no-untyped-def]
    data = learning_data(records, max_trials=4)
    numbers = [c.number for c in data.curves]
    # The front (#3, #4, #5) first, then the running #8; sorted by number for drawing.
    assert numbers == [3, 4, 5, 8]
    c3 = next(c for c in data.curves if c.number == 3)
    assert c3.on_front and c3.epochs == tuple(range(1, 11))
    assert c3.val_top1[-1] == pytest.approx(48.0)
    assert c3.gap[-1] == pytest.approx(5.0)
    pairs = zip(c3.train_top1, c3.val_top1, strict=True)
    assert c3.gap == tuple(t - v for t, v in pairs if t is not None and v is not None)
    running = next(c for c in data.curves if c.number == 8)
    assert running.state == "RUNNING" and len(running.epochs) == 4


def test_proposals_data_lists_rule_trials_with_reasons(records) -> None:  # type: ignore[no-untyped-def]
    (row,) = proposals_data(records).rows
    assert row.number == 5 and row.rule == "depth" and row.source_trial == 3
    assert "train/val gap 7.1 points" in row.reason
    assert row.top1 == 58.0 and row.latency_ms == 6.0
    assert row.config == "2-2-2-2 w0.5 r48"


def test_complexity_data_uses_measurements_of_pruned_and_failed_trials() -> None:
    study = new_study()
    a, b, c = small_arch((1, 1, 1, 1)), small_arch((2, 2, 2, 2)), small_arch((1, 1, 1, 1), 0.5)
    add_trial(study, arch=a, values=(50.0, 1.0), memory_mb=10.0)
    # The worker stores the latency measurement before training; pruned and failed trials keep it.
    add_trial(study, arch=b, values=None, state=TrialState.PRUNED, latency_ms=2.0)
    add_trial(study, arch=c, values=None, state=TrialState.FAIL, latency_ms=1.5)
    data = complexity_data(study_records(study))
    assert sorted(data.flops_latency.y) == [1.0, 1.5, 2.0]
    assert data.params_memory.y == (10.0,)


def test_a_waiting_proposal_shows_its_proposed_config() -> None:
    study = new_study()
    arch = small_arch((2, 2, 2, 2), 0.5, 48)
    candidate = {"arch": arch.to_dict(), "recipe": {"epochs": 10}}
    # What search.proposals enqueues: origin, reason, source trial and the proposed candidate.
    study.enqueue_trial(
        {},
        user_attrs={
            "origin": "rule:width",
            "reason": "width 0.25→0.5: short",
            "source_trial": 0,
            "proposal": candidate,
        },
    )
    (row,) = proposals_data(study_records(study)).rows
    assert (row.state, row.rule, row.config, row.top1) == (
        "WAITING",
        "width",
        "2-2-2-2 w0.5 r48",
        None,
    )
