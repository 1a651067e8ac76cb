"""The table-answered launcher and latency source (``rs_search.bench.answer``) on the shipped
tiny-digits table: real curves of 36 candidates trained on digits for 9 epochs."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import optuna
import pytest

from rs_search.bench.answer import NotInTable, TableAnswers, TableLatency, TableLauncher
from rs_search.bench.table import load_table
from rs_search.errors import TrainingDiverged, TrialInterrupted
from tests.bench.helpers import DATA

TABLE = load_table(DATA / "tiny-digits-9ep.jsonl")


def test_it_answers_the_tables_curve_epoch_by_epoch_and_stops_where_told(tmp_path: Path) -> None:
    answers = TableAnswers(TABLE)
    launcher = TableLauncher(answers)
    entry = TABLE.done[5]
    seen: list[dict] = []

    def on_epoch(metrics: object) -> bool:
        row = metrics.to_dict()  # type: ignore[attr-defined]
        seen.append(row)
        return int(row["epoch"]) < 3  # a rung at epoch 3 prunes it

    result = launcher(
        entry.candidate, out_dir=tmp_path / "a", resume=True, seed=0,
        on_epoch=on_epoch, should_stop=lambda: False,
    )  # fmt: skip
    assert [r["epoch"] for r in seen] == [1, 2, 3]
    assert [r["val_top1"] for r in seen] == list(entry.curve.val_top1[:3])
    assert result.stopped_early and result.epochs_done == 3 and len(result.curve) == 3
    assert launcher.spent_epochs == 3 and launcher.spent_flops == 3 * entry.flops
    # to the end when nothing stops it: all 9 epochs, the full budget
    full = launcher(
        entry.candidate, out_dir=tmp_path / "b", resume=True, seed=0,
        on_epoch=lambda m: True, should_stop=lambda: False,
    )  # fmt: skip
    assert full.epochs_done == 9 and not full.stopped_early
    assert full.curve[-1].to_dict()["val_top1"] == entry.final_top1
    assert launcher.spent_epochs == 12


def test_a_resumed_run_continues_after_its_checkpoint_and_counts_each_epoch_once(
    tmp_path: Path,
) -> None:
    launcher = TableLauncher(TableAnswers(TABLE))
    entry = TABLE.done[7]
    epochs: list[int] = []

    def on_epoch(metrics: object) -> bool:
        epochs.append(int(metrics.to_dict()["epoch"]))  # type: ignore[attr-defined]
        return True

    with pytest.raises(TrialInterrupted):
        launcher(
            entry.candidate, out_dir=tmp_path, resume=True, seed=0,
            on_epoch=on_epoch, should_stop=lambda: len(epochs) >= 4,
        )  # fmt: skip
    assert epochs == [1, 2, 3, 4] and launcher.spent_epochs == 4
    result = launcher(
        entry.candidate, out_dir=tmp_path, resume=True, seed=1,
        on_epoch=on_epoch, should_stop=lambda: False,
    )  # fmt: skip
    # the engine's contract: on_epoch hears the new epochs, the result holds them all
    assert epochs == [1, 2, 3, 4, 5, 6, 7, 8, 9] and result.epochs_done == 9
    assert [m.to_dict()["epoch"] for m in result.curve] == list(range(1, 10))
    assert launcher.spent_epochs == 9
    # resume=False starts again from epoch 1 (and spends again)
    launcher(
        entry.candidate, out_dir=tmp_path, resume=False, seed=1,
        on_epoch=lambda m: True, should_stop=lambda: False,
    )  # fmt: skip
    assert launcher.spent_epochs == 18


def test_a_candidate_outside_the_table_is_skipped_as_a_pruned_trial(tmp_path: Path) -> None:
    answers = TableAnswers(TABLE)
    launcher = TableLauncher(answers)
    entry = TABLE.done[0]
    other = replace(entry.candidate, recipe=replace(entry.candidate.recipe, lr_per_256=0.3))
    with pytest.raises(NotInTable) as caught:
        launcher(
            other, out_dir=tmp_path, resume=True, seed=0,
            on_epoch=lambda m: True, should_stop=lambda: False,
        )  # fmt: skip
    assert isinstance(caught.value, optuna.TrialPruned)  # the sampler moves on, nothing spent
    assert answers.skipped is not None and "not in the table" in answers.skipped
    assert launcher.spent_epochs == 0
    wide = replace(entry.candidate.arch, width=0.5)
    with pytest.raises(NotInTable):
        TableLatency(answers).figures(wide)
    figures = TableLatency(answers).figures(entry.candidate.arch)
    assert entry.latency is not None and figures.median_ms == entry.latency.median_ms


def test_a_no_effect_spelling_finds_its_entry_and_a_failed_entry_fails(tmp_path: Path) -> None:
    answers = TableAnswers(TABLE)
    plain = next(e for e in TABLE.done if e.candidate.recipe.randaug_layers == 0)
    recipe = plain.candidate.recipe
    spelled = replace(plain.candidate, recipe=replace(recipe, randaug_magnitude=10, epochs=3))
    assert spelled.key() != plain.key and answers.entry(spelled) is plain
    broken = replace(plain, status="failed", stage="train", error="loss is NaN at epoch 2")
    launcher = TableLauncher(TableAnswers(TABLE.with_entry(broken)))
    with pytest.raises(TrainingDiverged, match="NaN"):
        launcher(
            plain.candidate, out_dir=tmp_path, resume=True, seed=0,
            on_epoch=lambda m: True, should_stop=lambda: False,
        )  # fmt: skip


def test_the_rows_carry_train_accuracy_measured_like_validation(tmp_path: Path) -> None:
    # the scaling rules read the train/val gap from ``train_eval_top1`` (issue 12): a replay's
    # trial curves must hold it as a real run's do
    entry = TABLE.done[3]
    assert entry.curve is not None
    rows: list[dict] = []
    TableLauncher(TableAnswers(TABLE))(
        entry.candidate, out_dir=tmp_path, resume=True, seed=0,
        on_epoch=lambda m: rows.append(m.to_dict()) is None, should_stop=lambda: False,
    )  # fmt: skip
    assert [r["train_eval_top1"] for r in rows] == list(entry.curve.train_eval_top1)
    assert [r["train_eval_loss"] for r in rows] == list(entry.curve.train_eval_loss)
