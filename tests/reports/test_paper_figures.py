"""The report's paper figures say what the paper's say (issue 12, item 7).

- Scaling curves (Bello et al. 2021, Fig. 3): each line scales ONE dimension with every other
  held fixed; checked on the data of every line drawn from a grid study.
- Legends: every entry has its own name and its own (colour, dash) in the figure.
- Learning curves: the train/val gap is train accuracy measured like validation
  (``train_eval_top1``) minus validation accuracy; a curve without that figure falls back to the
  augmented running train top-1, and the panel says so.

Studies are real Optuna studies built with the trial contract (tests/reports/factory.py).
"""

from __future__ import annotations

import itertools

import optuna
import plotly.graph_objects as go
import pytest

from rs_search.reports import figures
from rs_search.reports.curves import learning_data
from rs_search.reports.report import build_sections
from rs_search.reports.scaling import DIMENSIONS, FIELD_OF, ScalingLine, scaling_data
from rs_search.specs import ArchSpec
from rs_search.study.read import read_study, study_records
from tests.reports.factory import add_trial, demo_study, make_curve, new_study, small_arch

optuna.logging.set_verbosity(optuna.logging.WARNING)

LAYOUTS = ((1, 1, 1, 1), (2, 2, 2, 2))
WIDTHS = (0.25, 0.5)
RESOLUTIONS = (32, 48)


def grid_study() -> optuna.Study:
    """Every depth x width x resolution at 10 epochs (latency grows with each), some at 5, a
    second recipe of one architecture, and one architecture without SE."""
    study = new_study()
    for i, (layout, width, res) in enumerate(itertools.product(LAYOUTS, WIDTHS, RESOLUTIONS)):
        arch = small_arch(layout, width, res)
        cost = sum(layout) * width * res / 32
        add_trial(study, arch=arch, epochs=10, values=(40.0 + i, cost))
        if res == 32:
            add_trial(study, arch=arch, epochs=5, values=(30.0 + i, cost))
    add_trial(study, arch=small_arch(), epochs=10, values=(39.0, 1.0))  # worse recipe
    no_se = ArchSpec(layout=(2, 2, 2, 2), width=0.25, resolution=32, se_ratio=0.0, num_classes=10)
    add_trial(study, arch=no_se, epochs=10, values=(41.5, 1.5))
    return study


def varies_one_dimension_only(line: ScalingLine) -> bool:
    """Every pair of the line's architectures is equal in every field but the line's
    dimension's, and differs in that one."""
    field = FIELD_OF[line.dimension]
    for a, b in itertools.combinations(line.archs, 2):
        da, db = a.to_dict(), b.to_dict()
        if da[field] == db[field]:
            return False
        if {k: v for k, v in da.items() if k != field} != {
            k: v for k, v in db.items() if k != field
        }:
            return False
    return True


@pytest.mark.parametrize("make", [grid_study, demo_study], ids=["grid", "demo"])
def test_every_scaling_line_varies_one_dimension_only(make) -> None:  # type: ignore[no-untyped-def]
    data = scaling_data(study_records(make()), x_kind="latency")
    assert data.lines
    for line in data.lines:
        assert len(line.archs) >= 2, line
        assert varies_one_dimension_only(line), line
        assert len(line.archs) == len(line.x) == len(line.top1) == len(line.numbers)


def test_planted_zig_zag_is_caught() -> None:
    """The check above can fail: a line across widths AND resolutions (what the old panel drew
    as "depth 1-1-1-1") is not one dimension."""
    zig_zag = ScalingLine(
        dimension="depth",
        group="x",
        budget_epochs=10,
        x=(1.0, 2.0),
        top1=(1.0, 2.0),
        numbers=(0, 1),
        archs=(small_arch((1, 1, 1, 1), 0.25, 32), small_arch((2, 2, 2, 2), 0.5, 48)),
        steps=("1-1-1-1", "2-2-2-2"),
    )
    assert not varies_one_dimension_only(zig_zag)


def test_grid_lines_are_the_paper_s_scaling_paths() -> None:
    data = scaling_data(study_records(grid_study()), x_kind="latency")
    # 10 epochs: per dimension, one line per combination of the other two (4), each of 2 points;
    # the SE-less net makes no line (no other SE-less architecture), and SE shows in the labels.
    for dimension in DIMENSIONS:
        lines = data.lines_for(dimension, 10)
        assert len(lines) == 4 and all(len(ln.archs) == 2 for ln in lines), lines
        assert all(ln.group.endswith("se_ratio 0.25") for ln in lines)
    depth = {ln.group: ln for ln in data.lines_for("depth", 10)}
    line = depth["w0.25 r32 se_ratio 0.25"]
    # The best recipe of 1-1-1-1 w0.25 r32 (trial 0, 40 %, not trial 12's 39 %).
    assert line.steps == ("1-1-1-1", "2-2-2-2") and line.numbers == (0, 6)
    assert line.top1 == (40.0, 44.0) and line.x == (1.0, 2.0)
    # 5 epochs: only 32 px was trained, so no resolution line.
    assert len(data.lines_for("depth", 5)) == 2 and data.lines_for("resolution", 5) == ()
    labels = [(ln.dimension, ln.budget_epochs, ln.group) for ln in data.lines]
    assert len(labels) == len(set(labels))


def legend_entries(fig: go.Figure) -> dict[str, set[tuple[str, str]]]:
    """Legend name -> every (colour, dash) its traces use."""
    out: dict[str, set[tuple[str, str]]] = {}
    for trace in fig.data:
        if trace.name is None:
            continue
        out.setdefault(trace.name, set()).add((trace.line.color, trace.line.dash or "solid"))
    return out


def test_scaling_legend_is_unambiguous() -> None:
    data = scaling_data(study_records(grid_study()), x_kind="latency")
    fig = figures.scaling_figure(data)
    entries = legend_entries(fig)
    shown = [t.name for t in fig.data if t.showlegend is not False]
    assert len(shown) == len(set(shown)) == len(entries)  # one entry per name
    assert all(len(styles) == 1 for styles in entries.values())  # one style per entry...
    styles = [next(iter(s)) for s in entries.values()]
    assert len(styles) == len(set(styles))  # ...and no style shared by two entries
    assert "depth ↑ at w0.25 r32 se_ratio 0.25" in entries
    assert "width ↑ at 1-1-1-1 r32 se_ratio 0.25" in entries
    # Same lines in two budget columns are one entry (toggled together), not two.
    assert sum(t.name == "depth ↑ at w0.25 r32 se_ratio 0.25" for t in fig.data) == 2


def test_line_styles_stay_distinct_past_the_palette() -> None:
    keys = [f"k{i}" for i in range(3 * len(figures.PALETTE))]
    styles = figures.line_styles(keys)
    assert len(set(styles.values())) == len(keys)


def test_learning_gap_uses_train_accuracy_measured_like_validation() -> None:
    study = new_study()
    arch = small_arch()
    add_trial(study, arch=arch, epochs=10, values=(50.0, 1.0), curve=make_curve(10, final_val=50.0))
    old = make_curve(10, final_val=45.0, train_eval=False)  # rows from before train_eval_*
    add_trial(study, arch=small_arch(width=0.5), epochs=10, values=(45.0, 2.0), curve=old)
    records = study_records(study)
    data = learning_data(records)
    measured, fallback = data.curves
    rows = records[0].curve
    # The running train top-1 sits below validation (augmentation, dropout): its "gap" would
    # be negative; the gap drawn is train measured like validation minus validation.
    assert all(r["train_top1"] < r["val_top1"] for r in rows)
    assert measured.train_measure == "eval"
    assert measured.train_top1 == tuple(r["train_eval_top1"] for r in rows)
    assert measured.gap == tuple(pytest.approx(r["train_eval_top1"] - r["val_top1"]) for r in rows)
    assert measured.gap[-1] == pytest.approx(5.0) and all(g > 0 for g in measured.gap)
    assert measured.train_loss == tuple(r["train_eval_loss"] for r in rows)
    # A curve without the measurement falls back, visibly.
    assert fallback.train_measure == "augmented" and data.fallbacks == (fallback,)
    assert fallback.train_top1 == tuple(r["train_top1"] for r in old)
    fig = figures.learning_figure(data)
    notes = [a.text.replace("<br>", " ") for a in fig.layout.annotations if a.text[0] == "#"]
    assert notes == [figures.fallback_note(data)] and "#1:" in notes[0]
    dashes = {t.line.dash for t in fig.data if t.name.startswith("#1 ")}
    assert "dot" in dashes  # the fallback's train and gap lines are dotted


def test_learning_panel_without_fallback_has_no_note() -> None:
    data = learning_data(study_records(demo_study()))
    assert data.curves and data.fallbacks == ()
    assert figures.fallback_note(data) is None
    sections = {s.key: s for s in build_sections(list(study_records(demo_study())), _info())}
    assert sections["learning"].lines == ()


def _info():  # type: ignore[no-untyped-def]
    return read_study(demo_study()).info
