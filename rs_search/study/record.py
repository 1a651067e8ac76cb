"""``TrialRecord``: one typed reading of a stored trial, built once, read by everything else.

An rs-search trial is a plain Optuna trial (DESIGN.md section 3) whose user attributes carry the
contract of ``attrs``. :func:`trial_record` reads one into a frozen record: values keyed by
objective name (a study's objectives may be accuracy and memory, with no latency), feasibility
decided here and nowhere else (:attr:`TrialRecord.usable`), the candidate, the curve, the rung
values and halving decisions, where the trial came from (a seed, the sampler or a scaling rule),
the latency figures, the retry it stands in for, and why it failed.

Malformed attributes become ``None`` (and a word in ``problems``), never an exception: a report
or a worker must still read a study that a buggy or older worker wrote to.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from rs_search.errors import SpecError
from rs_search.space import OBJECTIVES
from rs_search.specs import ArchSpec, Candidate, layout_label
from rs_search.study import attrs

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

#: How each objective is named in words (hover text, tables).
OBJECTIVE_WORDS = {"accuracy": "val top-1", "latency": "latency", "memory": "peak memory"}


def directions_of(objectives: Sequence[str]) -> tuple[str, ...]:
    """``maximize``/``minimize`` of each objective (``rs_search.space.OBJECTIVES``)."""
    return tuple(OBJECTIVES[name] for name in objectives)


@dataclass(frozen=True, kw_only=True)
class Measurements:
    """What the worker measured before training, on the study's target profile."""

    latency_ms: float | None = None
    latency_p90_ms: float | None = None
    memory_mb: float | None = None
    profile: str | None = None
    params_m: float | None = None


@dataclass(frozen=True, kw_only=True)
class TrialRecord:
    """One trial, as plain typed data (see the module docstring)."""

    number: int
    state: str  # Optuna's TrialState name: COMPLETE, PRUNED, FAIL, RUNNING, WAITING
    values: Mapping[str, float] | None = None  # objective name -> value, in the study's order
    constraints: Mapping[str, float] = field(default_factory=dict)  # feasible when all <= 0
    rejected: str | None = None  # why a hard limit kept it from training
    candidate: Candidate | None = None  # what it trains (or trained)
    arch: ArchSpec | None = None  # its architecture (a waiting proposal's: the proposal's)
    recipe: Mapping[str, Any] = field(default_factory=dict)  # raw, readable even if malformed
    curve: tuple[Mapping[str, Any], ...] = ()
    rungs: Mapping[int, float] = field(default_factory=dict)  # rung epoch -> val top-1 there
    halving: tuple[Mapping[str, Any], ...] = ()  # the decisions at each rung
    origin: str = "sampler"  # "seed", "sampler", or a rule: "rule:depth", "rule:width"
    seed_name: str | None = None
    reason: str | None = None  # a rule proposal's reason
    source_trial: int | None = None  # the trial a rule proposal was derived from
    proposal: Candidate | None = None  # a rule proposal's candidate, set when it was enqueued
    fixed_candidate: Candidate | None = None  # a whole candidate to train instead of sampling
    slot: int | None = None  # a budget slot's index (``start``)
    repeat_of: int | None = None  # a repeat: this earlier trial's result stands for it
    queued_params: Mapping[str, Any] = field(default_factory=dict)  # params enqueued with it
    measured: Measurements = field(default_factory=Measurements)
    retry_origin: int = -1  # the trial this one retries at the root of its chain (else itself)
    retry_of: int | None = None  # the attempt this trial retries directly
    resumed_from: int | None = None  # a retry continued from this checkpoint epoch
    interrupted: bool = False
    fail_reason: str | None = None
    worker: str | None = None
    world_size: int | None = None
    checkpoint_artifact: Mapping[str, Any] | None = None
    problems: Mapping[str, str] = field(default_factory=dict)  # attribute -> why unreadable
    datetime_start: datetime | None = None
    datetime_complete: datetime | None = None

    # -- what the study contract means ------------------------------------------------------------

    @property
    def feasible(self) -> bool:
        """Trained within every hard limit: not rejected, every constraint a number <= 0."""
        return self.rejected is None and all(
            math.isfinite(c) and c <= 0 for c in self.constraints.values()
        )

    @property
    def usable(self) -> bool:
        """Complete, trained, feasible, with finite values: a point of the Pareto front. The one
        definition the summary, export, the scaling rules and the reports share (what
        ``study.best_trials`` returns for a constrained study)."""
        return (
            self.state == "COMPLETE"
            and self.feasible
            and self.values is not None
            and all(math.isfinite(v) for v in self.values.values())
        )

    @property
    def finished(self) -> bool:
        """Counts against the trial budget: complete, pruned, or failed for a reason of its own.

        A trial failed because its worker died (heartbeat went stale) or was interrupted is not
        finished: a retry stands in for it.
        """
        if self.state in ("COMPLETE", "PRUNED"):
            return True
        return self.state == "FAIL" and self.fail_reason is not None

    @property
    def is_rule_proposal(self) -> bool:
        return self.origin.startswith(attrs.RULE_PREFIX)

    @property
    def is_empty_slot(self) -> bool:
        """A waiting budget slot the sampler will fill: no seed, no proposal, no params yet
        (a scaling rule's proposal may take it over)."""
        return (
            self.state == "WAITING"
            and self.slot is not None
            and self.origin == "sampler"
            and not self.queued_params
        )

    # -- figures ----------------------------------------------------------------------------------

    def point(self, objectives: Sequence[str]) -> tuple[float, ...]:
        """The values in ``objectives``' order (``KeyError`` for one the study does not have)."""
        if self.values is None:
            raise ValueError(f"trial {self.number} has no values")
        return tuple(self.values[name] for name in objectives)

    @property
    def top1(self) -> float | None:
        return None if self.values is None else self.values.get("accuracy")

    @property
    def latency_ms(self) -> float | None:
        """The latency objective when the study has one, else (and for a trial without values:
        failed, pruned, running) the latency the worker measured before training."""
        if self.values is not None and "latency" in self.values:
            return self.values["latency"]
        return self.measured.latency_ms

    @property
    def memory_mb(self) -> float | None:
        """The memory objective when the study has one, else the measurement the worker stored."""
        if self.values is not None and "memory" in self.values:
            return self.values["memory"]
        return self.measured.memory_mb

    def value(self, objective: str) -> float | None:
        """An objective's value, or for a trial without it the worker's measurement of it."""
        if objective == "accuracy":
            return self.top1
        return self.latency_ms if objective == "latency" else self.memory_mb

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
        """Short config name: ``50 w1 r160`` (``ArchSpec.short_label``)."""
        return f"#{self.number}" if self.arch is None else self.arch.short_label

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
            lines.append(
                ", ".join(
                    f"{OBJECTIVE_WORDS.get(name, name)} {value:.4g}"
                    for name, value in self.values.items()
                )
            )
        if self.is_rule_proposal:
            lines.append(f"origin: {self.origin}" + (f" ({self.reason})" if self.reason else ""))
        return "<br>".join(lines)


# -- reading ------------------------------------------------------------------------------------


def trial_record(trial: FrozenTrial, objectives: Sequence[str]) -> TrialRecord:
    """One stored trial -> a ``TrialRecord``; ``objectives`` names its values in order."""
    user = trial.user_attrs
    problems: dict[str, str] = {}
    candidate = _candidate(user, attrs.CANDIDATE, problems, where=attrs.CANDIDATE)
    proposal = _candidate(user, attrs.PROPOSAL, problems, where=attrs.PROPOSAL)
    fixed = _candidate(
        user,
        attrs.FIXED_CANDIDATE,
        problems,
        where=f"trial {trial.number} {attrs.FIXED_CANDIDATE}",
    )
    raw_candidate = user.get(attrs.CANDIDATE) or user.get(attrs.PROPOSAL)
    recipe = raw_candidate.get("recipe") if isinstance(raw_candidate, Mapping) else None
    values = None
    if trial.values is not None:
        values = {name: float(v) for name, v in zip(objectives, trial.values, strict=False)}
    seed_name = _text(user.get(attrs.SEED_NAME))
    origin = _text(user.get(attrs.ORIGIN)) or ("seed" if seed_name is not None else "sampler")
    return TrialRecord(
        number=trial.number,
        state=trial.state.name,
        values=values,
        constraints={str(k): _float(v) for k, v in trial.constraints.items()},
        rejected=_text(user.get(attrs.REJECTED)),
        candidate=candidate,
        arch=_arch(user, candidate or proposal or fixed, problems),
        recipe=dict(recipe) if isinstance(recipe, Mapping) else {},
        curve=_rows(user.get(attrs.CURVE)),
        rungs=_rungs(user),
        halving=_rows(user.get(attrs.HALVING)),
        origin=origin,
        seed_name=seed_name,
        reason=_text(user.get(attrs.REASON)),
        source_trial=_int(user.get(attrs.SOURCE_TRIAL)),
        proposal=proposal,
        fixed_candidate=fixed,
        slot=_int(user.get(attrs.SLOT)),
        repeat_of=_int(user.get(attrs.REPEAT_OF)),
        queued_params=_mapping(trial.system_attrs.get(attrs.FIXED_PARAMS)) or {},
        measured=Measurements(
            latency_ms=_finite(user.get(attrs.LATENCY_MS)),
            latency_p90_ms=_finite(user.get(attrs.LATENCY_P90_MS)),
            memory_mb=_finite(user.get(attrs.MEMORY_MB)),
            profile=_text(user.get(attrs.LATENCY_PROFILE)),
            params_m=_finite(user.get(attrs.PARAMS_M)),
        ),
        retry_origin=_retry_origin(trial),
        retry_of=_retry_of(trial.system_attrs),
        resumed_from=_int(user.get(attrs.RESUMED_FROM)),
        interrupted=bool(user.get(attrs.INTERRUPTED)),
        fail_reason=_text(user.get(attrs.FAIL_REASON)),
        worker=_text(user.get(attrs.WORKER)),
        world_size=_int(user.get(attrs.WORLD_SIZE)),
        checkpoint_artifact=_mapping(user.get(attrs.CHECKPOINT_ARTIFACT)),
        problems=problems,
        datetime_start=trial.datetime_start,
        datetime_complete=trial.datetime_complete,
    )


def _retry_origin(trial: FrozenTrial) -> int:
    """The number of the trial this one retries (itself when it is not a retry).

    A retry inherits its original's user attributes (curve, rung values), so everything that
    counts trials per candidate counts origins, not trial numbers.
    """
    value = _int(trial.system_attrs.get(attrs.FAILED_TRIAL))
    return trial.number if value is None else value


def _retry_of(system_attrs: Mapping[str, Any]) -> int | None:
    history = system_attrs.get(attrs.RETRY_HISTORY)
    if isinstance(history, list) and history and isinstance(history[-1], int):
        return int(history[-1])
    return _int(system_attrs.get(attrs.FAILED_TRIAL))


def _candidate(
    user: Mapping[str, Any], key: str, problems: dict[str, str], *, where: str
) -> Candidate | None:
    raw = user.get(key)
    if raw is None:
        return None
    try:
        return Candidate.from_dict(raw, where=where)
    except (SpecError, TypeError) as exc:
        problems[key] = str(exc)
        return None


def _arch(
    user: Mapping[str, Any], fallback: Candidate | None, problems: dict[str, str]
) -> ArchSpec | None:
    """The ``arch`` the worker stored; a trial that has not run yet (a queued proposal) shows
    its candidate's. A malformed ``arch`` is None (no fallback: it is what was measured)."""
    raw = user.get(attrs.ARCH)
    if raw is None:
        return fallback.arch if fallback is not None else None
    try:
        return ArchSpec.from_dict(raw)
    except (SpecError, TypeError) as exc:
        problems[attrs.ARCH] = str(exc)
        return None


def _rungs(user: Mapping[str, Any]) -> dict[int, float]:
    out: dict[int, float] = {}
    for key, value in user.items():
        epoch = key.removeprefix(attrs.RUNG_PREFIX)
        if key.startswith(attrs.RUNG_PREFIX) and epoch.isdigit() and _is_number(value):
            out[int(epoch)] = float(value)
    return dict(sorted(out.items()))


def _rows(value: Any) -> tuple[Mapping[str, Any], ...]:
    if not isinstance(value, list):
        return ()
    return tuple(row for row in value if isinstance(row, Mapping))


def _text(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


def _mapping(value: Any) -> Mapping[str, Any] | None:
    return dict(value) if isinstance(value, Mapping) else None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _float(value: Any) -> float:
    """A number as float; anything else NaN (a constraint that is not a number is broken)."""
    return float(value) if _is_number(value) else math.nan


def _finite(value: Any) -> float | None:
    return float(value) if _is_number(value) and math.isfinite(value) else None


# -- pure readings over many records ------------------------------------------------------------


def count_states(records: Sequence[TrialRecord]) -> dict[str, int]:
    """Trials by state (lower-case names), plus ``finished`` (counts against the trial budget)
    and ``rejected`` (complete, never trained)."""
    counts = dict.fromkeys(("running", "waiting", "complete", "pruned", "fail"), 0)
    for r in records:
        counts[r.state.lower()] = counts.get(r.state.lower(), 0) + 1
    counts["finished"] = sum(1 for r in records if r.finished)
    counts["rejected"] = sum(1 for r in records if r.state == "COMPLETE" and r.rejected)
    return counts


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
            seconds=float(sum(_finite(row.get("epoch_seconds")) or 0.0 for row in rows)),
        )
    return spent


def curve_series(record: TrialRecord, key: str) -> list[float | None]:
    """One metric of the curve, ``None`` where an epoch lacks it."""
    return [_finite(row.get(key)) for row in record.curve]
