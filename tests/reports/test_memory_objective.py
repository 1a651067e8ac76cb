"""A study whose objectives are {accuracy, memory} reports memory as memory (issue 13).

The space format allows any two of accuracy, latency and memory; the report used to take the
second value for the latency. Records key values by objective name, so every data step and label
follows the study's own objectives. The trials also carry a measured latency (as a worker stores
it) that differs from their memory, so a mix-up cannot pass unnoticed.
"""

from __future__ import annotations

import optuna
import pytest

from rs_search.reports.front import hypervolume_data, pareto_data
from rs_search.reports.report import build_sections, render_html
from rs_search.reports.status import study_status
from rs_search.study.read import read_study
from tests.reports.factory import T0, add_trial, new_study, small_arch

optuna.logging.set_verbosity(optuna.logging.WARNING)


def memory_study() -> optuna.Study:
    study = new_study(name="memory")
    study.set_user_attr("objectives", ["accuracy", "memory"])  # what `start` stores, flat
    a, b, c = small_arch((1, 1, 1, 1)), small_arch((2, 2, 2, 2)), small_arch((1, 1, 1, 1), 0.5)
    # values = (top-1 %, peak memory MB); latency_ms is the worker's measurement, not an objective
    add_trial(study, arch=a, values=(40.0, 100.0), latency_ms=9.0, minute=0)
    add_trial(study, arch=b, values=(55.0, 300.0), latency_ms=2.0, minute=5)
    add_trial(study, arch=c, values=(50.0, 400.0), latency_ms=1.0, minute=10)  # dominated by b
    return study


def test_the_data_steps_use_memory_where_the_study_has_memory() -> None:
    snapshot = read_study(memory_study())
    assert snapshot.info.objectives == ("accuracy", "memory")
    records = list(snapshot.records)
    assert [r.memory_mb for r in records] == [100.0, 300.0, 400.0]
    assert [r.latency_ms for r in records] == [9.0, 2.0, 1.0]  # measured, never a value

    (panel,) = pareto_data(records, target="cpu", objectives=snapshot.info.objectives).panels
    assert panel.cost_objective == "memory" and panel.cost_label == "peak memory (MB)"
    assert panel.cost == (100.0, 300.0, 400.0)
    assert panel.on_front == (True, True, False)
    assert panel.front_cost == (100.0, 300.0)
    assert "peak memory 300" in panel.hover[1] and "latency" not in panel.hover[1]

    volume = hypervolume_data(records, objectives=snapshot.info.objectives)
    assert volume.reference == pytest.approx((0.0, 440.0))  # 1.1 x the worst memory

    status = study_status(records, snapshot.info, heartbeats={}, now=T0)
    assert [f.values for f in status.front] == [(40.0, 100.0), (55.0, 300.0)]
    assert status.objectives == ("accuracy", "memory")


def test_the_report_labels_memory_as_memory() -> None:
    snapshot = read_study(memory_study())
    sections = build_sections(list(snapshot.records), snapshot.info)
    pareto = next(s for s in sections if s.key == "pareto")
    assert pareto.figure.layout.xaxis.title.text == "peak memory (MB)"
    assert "against measured peak memory" in pareto.figure.layout.title.text
    assert "against peak memory" in pareto.note
    names = [trace.name for trace in pareto.figure.data]
    assert "top-1/peak memory front" in names and not any("latency" in n for n in names)
    hypervolume = next(s for s in sections if s.key == "hypervolume")
    assert "val top-1/peak memory space" in hypervolume.note
    page = render_html(snapshot.info, list(snapshot.records), sections)
    assert "objectives: accuracy, memory" in page
