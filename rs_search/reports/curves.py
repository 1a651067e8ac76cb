"""Data steps of the learning curves (with the train/val gap) and of the selector's proposals.

The train/val gap is what scaling rule 1 reads (Bello et al. 2021, Sec. 7.1): a widening gap at
long training means overfitting, where depth scaling pays off and width scaling does not. The gap
is train accuracy *measured like validation* minus validation accuracy: the engine's
``train_eval_top1`` (the same weights, eval mode, no augmentation, on a fixed subset of the
training split; ``rs_search.train.metrics.EpochMetrics``). The running ``train_top1`` averaged
over augmented batches with dropout and stochastic depth on sits below validation for most of a
regularised run, so a gap from it is negative where the model overfits. A trial whose curve
lacks the measurement (written before it existed) falls back to that running figure, marked so
that the figure can say it (``LearningCurve.train_measure``).

The proposals table shows what the selector enqueued from those rules and why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from rs_search.reports.front import objectives_of, ranks
from rs_search.study.attrs import RULE_PREFIX
from rs_search.study.record import TrialRecord, curve_series


@dataclass(frozen=True, kw_only=True)
class LearningCurve:
    number: int
    label: str
    state: str
    on_front: bool
    epochs: tuple[int, ...]
    train_top1: tuple[float | None, ...]  # the gap's train figure (see ``train_measure``)
    val_top1: tuple[float | None, ...]
    gap: tuple[float | None, ...]  # train top-1 minus val top-1, points
    # "eval": train top-1 measured like validation (``train_eval_top1``); "augmented": the curve
    # lacks it and the running top-1 over augmented, regularised batches stands in (the gap then
    # understates overfitting; the figure says so)
    train_measure: Literal["eval", "augmented"]
    train_loss: tuple[float | None, ...]  # measured as ``train_measure`` says
    val_loss: tuple[float | None, ...]


@dataclass(frozen=True, kw_only=True)
class LearningData:
    curves: tuple[LearningCurve, ...]

    @property
    def fallbacks(self) -> tuple[LearningCurve, ...]:
        """Curves whose gap uses the augmented running train top-1 (no eval-mode figure)."""
        return tuple(c for c in self.curves if c.train_measure == "augmented")


def learning_data(records: Sequence[TrialRecord], *, max_trials: int = 8) -> LearningData:
    """Curves of the front trials first, then running trials, then the latest others, at most
    ``max_trials`` (more lines than that cannot be told apart)."""
    objectives = objectives_of(records)
    usable = [r for r in records if r.usable]
    points = [r.point(objectives) for r in usable]
    front = {
        r.number for r, rank in zip(usable, ranks(points, objectives), strict=True) if rank == 0
    }
    with_curve = [r for r in records if r.curve]
    ordered = sorted(
        with_curve,
        key=lambda r: (r.number not in front, r.state != "RUNNING", -r.number),
    )
    curves = []
    for record in ordered[:max_trials]:
        train = curve_series(record, "train_eval_top1")
        measure: Literal["eval", "augmented"] = "eval"
        if all(t is None for t in train):
            train, measure = curve_series(record, "train_top1"), "augmented"
        val = curve_series(record, "val_top1")
        epochs = [
            int(e) if isinstance(e := row.get("epoch"), int) else i + 1
            for i, row in enumerate(record.curve)
        ]
        curves.append(
            LearningCurve(
                number=record.number,
                label=f"#{record.number} {record.label}",
                state=record.state,
                on_front=record.number in front,
                epochs=tuple(epochs),
                train_top1=tuple(train),
                val_top1=tuple(val),
                gap=tuple(
                    t - v if t is not None and v is not None else None
                    for t, v in zip(train, val, strict=True)
                ),
                train_loss=tuple(
                    curve_series(record, "train_eval_loss" if measure == "eval" else "train_loss")
                ),
                val_loss=tuple(curve_series(record, "val_loss")),
                train_measure=measure,
            )
        )
    return LearningData(curves=tuple(sorted(curves, key=lambda c: c.number)))


@dataclass(frozen=True, kw_only=True)
class ProposalRow:
    number: int
    state: str
    rule: str  # "depth", "width"
    source_trial: int | None
    reason: str
    config: str
    top1: float | None
    latency_ms: float | None


@dataclass(frozen=True, kw_only=True)
class ProposalsData:
    rows: tuple[ProposalRow, ...]


def proposals_data(records: Sequence[TrialRecord]) -> ProposalsData:
    rows = [
        ProposalRow(
            number=r.number,
            state=r.state,
            rule=r.origin.removeprefix(RULE_PREFIX),
            source_trial=r.source_trial,
            reason=r.reason or "",
            config=r.label,
            top1=r.top1 if r.state == "COMPLETE" else None,
            latency_ms=r.latency_ms if r.state == "COMPLETE" else None,
        )
        for r in records
        if r.is_rule_proposal
    ]
    return ProposalsData(rows=tuple(rows))
