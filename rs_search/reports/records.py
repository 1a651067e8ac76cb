"""Trials of an rs-search study as plain records: the one place that reads Optuna's trial objects.

An rs-search study is a plain Optuna study (DESIGN.md section 3): values are (validation top-1 %,
latency ms[, peak memory MB]) and each trial carries user attributes ``arch``, ``candidate``,
``curve`` (per-epoch metrics), possibly ``origin``/``reason`` (a proposal of the scaling rules)
and ``rejected``/``fail_reason``. Every figure and ``rs-search status`` start from these records,
so a change of the trial contract is absorbed here and nowhere else.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from rs_search.errors import SpecError
from rs_search.specs import ArchSpec, layout_label

if TYPE_CHECKING:
    import optuna

#: Objective order of the study contract: values = (top-1, latency[, memory]).
OBJECTIVE_LABELS = ("val top-1 (%)", "latency (ms)", "peak memory (MB)")
DIRECTIONS = ("maximize", "minimize", "minimize")


@dataclass(frozen=True, kw_only=True)
class TrialRecord:
    """What the reports need from one trial; every field is plain data."""

    number: int
    state: str  # Optuna TrialState name: COMPLETE, RUNNING, WAITING, FAIL, PRUNED
    values: tuple[float, ...] | None
    arch: ArchSpec | None
    recipe: Mapping[str, Any] = field(default_factory=dict)
    curve: tuple[Mapping[str, Any], ...] = ()
    origin: str | None = None  # "rule:depth", "rule:width" for a proposal of the scaling rules
    reason: str | None = None
    source_trial: int | None = None  # the trial a proposal was derived from
    latency_attr: float | None = None  # latency ms from the latency cache (user attr latency_ms)
    memory_attr: float | None = None  # peak memory MB from the latency cache (user attr memory_mb)
    retry_of: int | None = None  # the attempt this trial retries (Optuna's retry_history[-1])
    resumed_from: int | None = None  # a retry continued from this checkpoint epoch
    fail_reason: str | None = None
    feasible: bool = True
    worker: str | None = None
    datetime_start: datetime | None = None
    datetime_complete: datetime | None = None

    @property
    def top1(self) -> float | None:
        return self.values[0] if self.values else None

    @property
    def latency_ms(self) -> float | None:
        """The latency objective; for a trial without values (failed, pruned, running) the
        measurement the worker stored before training."""
        if self.values and len(self.values) > 1:
            return self.values[1]
        return self.latency_attr

    @property
    def memory_mb(self) -> float | None:
        """The memory objective when the study has one, else the measurement the worker stored."""
        if self.values and len(self.values) > 2:
            return self.values[2]
        return self.memory_attr

    @property
    def budget_epochs(self) -> int | None:
        """The training length the candidate was given (its recipe's epochs)."""
        epochs = self.recipe.get("epochs")
        return int(epochs) if isinstance(epochs, int) and not isinstance(epochs, bool) else None

    @property
    def epochs_trained(self) -> int:
        """Epochs this trial has run so far: the length of its curve."""
        return len(self.curve)

    @property
    def label(self) -> str:
        """Short config name: ``50 w1.0 r160`` (depth label, width multiplier, resolution)."""
        if self.arch is None:
            return f"#{self.number}"
        return f"{self.arch.label} w{self.arch.width:g} r{self.arch.resolution}"

    @property
    def usable(self) -> bool:
        """A finished, feasible trial with finite top-1 and latency: a point of the front."""
        return (
            self.state == "COMPLETE"
            and self.feasible
            and self.values is not None
            and len(self.values) >= 2
            and all(math.isfinite(v) for v in self.values)
        )

    def describe(self) -> str:
        """Multi-line (``<br>``) config summary for hover text."""
        lines = [f"trial #{self.number} ({self.state.lower()})"]
        if self.arch is not None:
            layout = "-".join(str(b) for b in self.arch.layout)
            lines.append(
                f"depth {layout_label(self.arch.layout)} [{layout}], width {self.arch.width:g}, "
                f"{self.arch.resolution} px, SE {self.arch.se_ratio:g}"
            )
        if self.recipe:
            r = self.recipe
            lines.append(
                f"{r.get('epochs', '?')} epochs, batch {r.get('batch_size', '?')}, "
                f"wd {r.get('weight_decay', '?')}, dropout {r.get('dropout', '?')}, "
                f"sd {r.get('stochastic_depth', '?')}, RA {r.get('randaug_layers', '?')}x"
                f"{r.get('randaug_magnitude', '?')}"
            )
        if self.values is not None:
            parts = [
                f"{name.split(' (')[0]} {value:.4g}"
                for name, value in zip(OBJECTIVE_LABELS, self.values, strict=False)
            ]
            lines.append(", ".join(parts))
        if self.origin:
            lines.append(f"origin: {self.origin}" + (f" ({self.reason})" if self.reason else ""))
        return "<br>".join(lines)


def trial_record(trial: optuna.trial.FrozenTrial) -> TrialRecord:
    """One Optuna trial -> a ``TrialRecord``; malformed attributes become ``None``, not errors,
    because a report must still open on a study that a buggy or older worker wrote to."""
    attrs = trial.user_attrs
    arch = _arch(attrs)
    candidate = attrs.get("candidate") or attrs.get("proposal")
    recipe = candidate.get("recipe") if isinstance(candidate, Mapping) else None
    curve = attrs.get("curve")
    values = tuple(float(v) for v in trial.values) if trial.values is not None else None
    constraints = trial.constraints.values()  # Optuna 5: {key: value}, feasible when all <= 0
    feasible = not attrs.get("rejected") and all(
        _number(c) is not None and c <= 0 for c in constraints
    )
    return TrialRecord(
        number=trial.number,
        state=trial.state.name,
        values=values,
        arch=arch,
        recipe=dict(recipe) if isinstance(recipe, Mapping) else {},
        curve=tuple(row for row in curve if isinstance(row, Mapping))
        if isinstance(curve, list)
        else (),
        origin=_text(attrs.get("origin")),
        reason=_text(attrs.get("reason")),
        source_trial=int(src) if isinstance(src := attrs.get("source_trial"), int) else None,
        latency_attr=_number(attrs.get("latency_ms")),
        memory_attr=_number(attrs.get("memory_mb")),
        retry_of=_retry_of(trial.system_attrs),
        resumed_from=int(e) if isinstance(e := attrs.get("resumed_from_epoch"), int) else None,
        fail_reason=_text(attrs.get("fail_reason")),
        feasible=feasible,
        worker=_text(attrs.get("worker")),
        datetime_start=trial.datetime_start,
        datetime_complete=trial.datetime_complete,
    )


def _retry_of(system_attrs: Mapping[str, Any]) -> int | None:
    history = system_attrs.get("retry_history")
    if isinstance(history, list) and history and isinstance(history[-1], int):
        return int(history[-1])
    failed = system_attrs.get("failed_trial")
    return int(failed) if isinstance(failed, int) else None


@dataclass(frozen=True, kw_only=True)
class Spent:
    """Compute one trial cost itself: the epochs (and their seconds) it trained."""

    epochs: int
    seconds: float


def compute_spent(records: Sequence[TrialRecord]) -> dict[int, Spent]:
    """Per trial, the epochs it trained itself. A retry inherits its predecessor's curve
    (``RetryHeartbeatStaleTrialCallback`` copies user attributes), so its own epochs start after
    the checkpoint it resumed from (``resumed_from_epoch``) or, before it has resumed, after the
    predecessor's last epoch; summing whole curves would count those epochs twice."""
    by_number = {r.number: r for r in records}
    spent = {}
    for record in records:
        base = 0
        if record.retry_of is not None:
            previous = by_number.get(record.retry_of)
            if record.resumed_from is not None:
                base = record.resumed_from
            elif previous is not None:
                base = previous.epochs_trained
        rows = record.curve[base:]
        spent[record.number] = Spent(
            epochs=len(rows),
            seconds=float(sum(_number(row.get("epoch_seconds")) or 0.0 for row in rows)),
        )
    return spent


def study_records(study: optuna.Study) -> list[TrialRecord]:
    """All trials of ``study`` in trial-number order."""
    return [trial_record(t) for t in study.get_trials(deepcopy=False)]


def _arch(attrs: Mapping[str, Any]) -> ArchSpec | None:
    raw = attrs.get("arch")
    # A proposal of the scaling rules waits in the queue with only its candidate (``proposal``).
    for key in ("candidate", "proposal"):
        if raw is None and isinstance(attrs.get(key), Mapping):
            raw = attrs[key].get("arch")
    if not isinstance(raw, Mapping):
        return None
    try:
        return ArchSpec.from_dict(raw)
    except (SpecError, TypeError):
        return None


def _text(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def curve_series(record: TrialRecord, key: str) -> list[float | None]:
    """One metric of the curve, ``None`` where an epoch lacks it."""
    return [_number(row.get(key)) for row in record.curve]
