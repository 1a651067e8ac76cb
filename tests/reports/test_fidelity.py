"""The fidelity check in a real study (issue 11, item 5): Kendall tau between top-1 at each rung
and the final top-1, over the trials that trained past the rung, in ``rs-search report`` and
``rs-search status``, with a warning where it is too low to trust halving.

The study is a real Optuna study in a SQLite file, its trials written with the study layer's
attribute names (``rs_search.study.attrs``: the curve, ``rung_<epoch>``, origin, seed name) as a
worker writes them, with curves chosen so each tau is known exactly: at epoch 3 the trials rank
as at the end (tau 1.0), at epoch 1 exactly reversed (tau -1.0, deeper nets learning slower
early: Bello et al. 2021, Sec. 7).
"""

from __future__ import annotations

import html
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.study import StudyDirection
from optuna.trial import TrialState

from rs_search.fidelity import MIN_TRUSTED_TAU, trust_note
from rs_search.reports import figures
from rs_search.reports.fidelity import fidelity_data, fidelity_line
from rs_search.reports.report import build_sections
from rs_search.specs import Candidate, RecipeSpec
from rs_search.study import attrs
from rs_search.study.read import read_study
from tests.reports.factory import small_arch

optuna.logging.set_verbosity(optuna.logging.WARNING)

ROOT = Path(__file__).resolve().parents[2]
BUDGET = 9
RUNGS = (1, 3)
# (origin, seed name, top-1 at epoch 1, at epoch 3, final): the rung-1 order is the reverse of
# the final one, the rung-3 order the same.
FULL = (
    ("seed", "tiny", 20.0, 30.0, 50.0),
    ("seed", "small", 18.0, 33.0, 55.0),
    ("rule:depth", None, 16.0, 36.0, 60.0),
    ("sampler", None, 14.0, 39.0, 65.0),
    ("sampler", None, 12.0, 42.0, 70.0),
)


def curve(points: dict[int, float], epochs: int) -> list[dict[str, Any]]:
    """A curve through ``points`` (epoch -> val top-1), linear in between."""
    known = sorted(points.items())
    rows = []
    for epoch in range(1, epochs + 1):
        lo = max((p for p in known if p[0] <= epoch), default=known[0])
        hi = min((p for p in known if p[0] >= epoch), default=known[-1])
        val = (
            lo[1] if hi[0] == lo[0] else lo[1] + (hi[1] - lo[1]) * (epoch - lo[0]) / (hi[0] - lo[0])
        )
        rows.append(
            {
                "epoch": epoch,
                "train_loss": 1.0,
                "train_top1": val - 2.0,
                "train_eval_loss": 0.8,
                "train_eval_top1": val + 3.0,
                "val_loss": 1.1,
                "val_top1": val,
                "epoch_seconds": 1.0,
            }
        )
    return rows


def add(
    study: optuna.Study,
    *,
    number: int,
    rows: list[dict[str, Any]],
    state: TrialState,
    values: tuple[float, float] | None = None,
    origin: str = "sampler",
    seed_name: str | None = None,
    rejected: str | None = None,
    rungs: tuple[int, ...] = RUNGS,
) -> None:
    """One trial as the worker leaves it: candidate, curve, the values at the ``rungs`` (of a
    study that halves) it reached."""
    arch = small_arch(width=0.25 * (1 + number % 4))
    candidate = Candidate(arch=arch, recipe=RecipeSpec(epochs=BUDGET, batch_size=32))
    user: dict[str, Any] = {
        attrs.ARCH: arch.to_dict(),
        attrs.CANDIDATE: candidate.to_dict(),
        attrs.CURVE: rows,
        attrs.ORIGIN: origin,
        attrs.LATENCY_MS: 1.0 + number,
    }
    if seed_name is not None:
        user[attrs.SEED_NAME] = seed_name
    if rejected is not None:
        user[attrs.REJECTED] = rejected
    for epoch in rungs:
        if len(rows) >= epoch and rejected is None:
            user[attrs.rung_attr(epoch)] = rows[epoch - 1]["val_top1"]
    study.add_trial(
        optuna.trial.create_trial(
            state=state,
            values=list(values) if values is not None else None,
            params={"width": arch.width},
            distributions={"width": CategoricalDistribution((0.25, 0.5, 0.75, 1.0))},
            user_attrs=user,
        )
    )


def known_study(storage: str, name: str = "fidelity") -> optuna.Study:
    study = optuna.create_study(
        storage=storage,
        study_name=name,
        directions=[StudyDirection.MAXIMIZE, StudyDirection.MINIMIZE],
    )
    study.set_user_attr(attrs.LEGACY_BUDGET_EPOCHS, BUDGET)
    number = 0
    for origin, seed, r1, r3, final in FULL:
        rows = curve({1: r1, 3: r3, BUDGET: final}, BUDGET)
        add(
            study,
            number=number,
            rows=rows,
            state=TrialState.COMPLETE,
            values=(final, 1.0 + number),
            origin=origin,
            seed_name=seed,
        )
        number += 1
    # Pruned at the rung of epoch 1 (never reached the end): not in either tau.
    add(study, number=number, rows=curve({1: 99.0}, 1), state=TrialState.PRUNED)
    # Rejected by a hard limit before training: no rung, no final top-1.
    add(
        study,
        number=number + 1,
        rows=[],
        state=TrialState.COMPLETE,
        values=(0.0, 99.0),
        rejected="latency 99 ms > 10 ms",
    )
    return study


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'study.db'}"


def test_tau_is_known_exactly_and_only_the_low_rung_warns(sqlite_url: str) -> None:
    known_study(sqlite_url)
    snapshot = read_study(optuna.load_study(study_name="fidelity", storage=sqlite_url))
    data = fidelity_data(snapshot.records)
    by_epoch = {r.epoch: r for r in data.rungs}
    assert sorted(by_epoch) == list(RUNGS)
    early, late = by_epoch[1], by_epoch[3]
    assert early.tau == pytest.approx(-1.0) and late.tau == pytest.approx(1.0)
    # The five trials that trained to the end (two seeds, a rule proposal, two sampled); the
    # pruned trial (rung 1 only) and the rejected one are not counted.
    assert early.numbers == late.numbers == (0, 1, 2, 3, 4)
    assert early.agreement.n == late.agreement.n == 5
    assert early.at_rung == (20.0, 18.0, 16.0, 14.0, 12.0)
    assert late.final == (50.0, 55.0, 60.0, 65.0, 70.0)
    assert early.warn and not late.warn and data.warnings == (early,)
    assert fidelity_line(early) == (
        "rung epoch 1: Kendall tau -1.00 over 5 trials trained past it (rung vs final top-1); "
        + trust_note(early.agreement)  # type: ignore[operator]
    )
    assert "warning" in fidelity_line(early) and "project heuristic" in fidelity_line(early)
    assert fidelity_line(late) == (
        "rung epoch 3: Kendall tau 1.00 over 5 trials trained past it (rung vs final top-1)"
    )
    # The report's section shows the same lines, the warning only for the low rung.
    (section,) = [
        s for s in build_sections(list(snapshot.records), snapshot.info) if s.key == "fidelity"
    ]
    assert section.lines == (fidelity_line(early), fidelity_line(late))
    fig = figures.fidelity_figure(data)
    tau_trace = fig.data[0]
    assert list(tau_trace.x) == [1, 3] and list(tau_trace.y) == pytest.approx([-1.0, 1.0])
    assert fig.data[1].y == (MIN_TRUSTED_TAU, MIN_TRUSTED_TAU)  # the threshold drawn
    assert "project heuristic" in fig.data[1].name


def test_a_study_without_rungs_says_so(sqlite_url: str) -> None:
    study = optuna.create_study(
        storage=sqlite_url, directions=[StudyDirection.MAXIMIZE, StudyDirection.MINIMIZE]
    )
    rows = curve({1: 10.0, BUDGET: 50.0}, BUDGET)
    add(study, number=0, rows=rows, state=TrialState.COMPLETE, values=(50.0, 1.0), rungs=())
    snapshot = read_study(study)
    assert fidelity_data(snapshot.records).rungs == ()
    (section,) = [
        s for s in build_sections(list(snapshot.records), snapshot.info) if s.key == "fidelity"
    ]
    assert section.lines == ("no rung recorded (halving off, or no trial has reached a rung yet)",)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rs_search.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )


def test_report_and_status_print_the_same_fidelity_lines(sqlite_url: str, tmp_path: Path) -> None:
    known_study(sqlite_url)
    snapshot = read_study(optuna.load_study(study_name="fidelity", storage=sqlite_url))
    early, late = (fidelity_line(r) for r in fidelity_data(snapshot.records).rungs)

    status = cli("status", "--study", "fidelity", "--storage", sqlite_url)
    assert status.returncode == 0, status.stderr
    printed = [ln for ln in status.stdout.splitlines() if ln.startswith("fidelity: ")]
    assert printed == [f"fidelity: {early}", f"fidelity: {late}"]
    as_json = cli("status", "--study", "fidelity", "--storage", sqlite_url, "--json")
    assert as_json.returncode == 0, as_json.stderr
    rows = json.loads(as_json.stdout)["fidelity"]
    assert [(r["epoch"], r["tau"], r["trials"], r["warn"]) for r in rows] == [
        (1, pytest.approx(-1.0), 5, True),
        (3, pytest.approx(1.0), 5, False),
    ]
    assert [r["line"] for r in rows] == [early, late]

    out = tmp_path / "report.html"
    report = cli("report", "--study", "fidelity", "--storage", sqlite_url, "--out", str(out))
    assert report.returncode == 0, report.stderr
    page = out.read_text()
    assert f'<li class="warn">{html.escape(early)}</li>' in page
    assert f'<li class="finding">{html.escape(late)}</li>' in page
    assert page.count('<li class="warn">') == 1  # the low rung only (no learning fallback)
