"""One trial: sample a candidate, measure it, check the hard limits, train it with halving.

The order follows DESIGN.md section 3:

1. the candidate comes from the sampler, from an enqueued seed (fixed params) or from the trial a
   retry stands in for (its params are copied);
2. its architecture goes into the trial's user attributes (``arch``, ``arch_key``; the latency
   worker's contract) with the whole candidate;
3. latency and peak memory come from the latency cache on the study's target profile (measured
   here on a miss);
4. hard limits are set with ``trial.set_constraint`` (value - limit, feasible when <= 0; Optuna
   5's samplers read these directly, no ``constraints_func``). A candidate that breaks one is
   **not trained**: the trial completes with top-1 0 and its measured latency/memory, is
   infeasible (so ``study.best_trials`` and the samplers' constrained ranking leave it out), and
   says why in ``rejected``. Completing rather than failing lets TPE/NSGA-II learn the infeasible
   region instead of sampling it again;
5. training reports every epoch (``curve``) and takes a halving decision at each rung; a pruned
   trial raises ``optuna.TrialPruned`` and keeps its curve;
6. the values are (validation top-1 of the EMA weights at the last epoch, latency ms[, memory MB]).

NaN loss, out-of-memory and data errors fail the trial with ``fail_reason``; ``worker.py`` tells
``study.optimize`` to catch them so the worker goes on.

**Repeats.** In a small, mostly categorical space the sampler proposes candidates an earlier trial
already trained (issue 11: a quickstart search without halving retrained the seed
``1-1-1-1 w0.25 r32`` for the full budget). Such a trial is not trained: the result of the
earliest trial that trained the same candidate (same ``key()`` once inactive parameters are
canonical, ``SearchSpace.normalise``) stands for it. The repeat is marked ``repeat_of`` and ends
pruned at once, spending no epoch, so the front holds the candidate once and the sampler is told
to move on: TPE ranks a pruned trial without intermediate values among the worst, so it stops
proposing a point it has evaluated, while the original keeps its place among the best. Reporting
the original's values instead (Optuna's FAQ on duplicated samples) was tried in the tabular
replay and measured: TPE, more confident with every copy, proposed the seeds again some 200 times
in a row and never spent its compute on anything new. Training the repeat as a deliberate
replicate with another seed would measure the seed-to-seed spread, but a search is the wrong place
to buy that by chance, on whichever candidate the sampler happens to repeat. An original that
failed or is still running is no answer: the repeat trains.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NoReturn, Protocol

import optuna

from rs_search.errors import (
    CandidateOutOfMemory,
    DataError,
    SpecError,
    TrainingDiverged,
    TrialInterrupted,
)
from rs_search.latency.cache import default_worker_id
from rs_search.search import halving
from rs_search.search.artifacts import CheckpointStore
from rs_search.search.deps import LatencyFigures, LatencySource
from rs_search.space import SearchSpace
from rs_search.specs import Candidate
from rs_search.study import attrs
from rs_search.study.queue import stored_record
from rs_search.study.read import study_records
from rs_search.study.record import Measurements, TrialRecord, trial_record
from rs_search.study.settings import StudySettings

_log = logging.getLogger("rs_search.search")

# Failures that end one trial, not the worker (study.optimize(catch=...)); SpecError: a queued
# whole candidate (attrs.FIXED_CANDIDATE) that is not a valid one for this study's budget.
TRIAL_FAILURES: tuple[type[Exception], ...] = (
    TrainingDiverged,
    CandidateOutOfMemory,
    DataError,
    SpecError,
)


class TrainLauncher(Protocol):
    """Runs the engine for one trial (``ddp.py`` broadcasts the job to the other ranks first)."""

    def __call__(
        self,
        candidate: Candidate,
        *,
        out_dir: Path,
        resume: bool,
        seed: int,
        on_epoch: Callable[[Any], bool],
        should_stop: Callable[[], bool],
    ) -> Any: ...


@dataclass
class TrialOutcome:
    """What the worker prints after a trial."""

    number: int
    summary: str


@dataclass
class Objective:
    """The callable handed to ``study.optimize``."""

    study_name: str
    settings: StudySettings
    space: SearchSpace
    latency: LatencySource
    launcher: TrainLauncher
    checkpoints: CheckpointStore
    should_stop: Callable[[], bool] = lambda: False
    on_outcome: Callable[[TrialOutcome], None] | None = None
    world_size: int = 1  # processes that train each trial (a torchrun group under --nproc)
    current: int | None = field(default=None, init=False)
    # finished trial -> (its candidate's canonical key, or None; its record), for repeats
    _answers: dict[int, tuple[str | None, TrialRecord]] = field(
        default_factory=dict, init=False, repr=False
    )

    def __call__(self, trial: optuna.Trial) -> tuple[float, ...]:
        self.current = trial.number
        started = time.monotonic()
        # Tag the trial first: `status` shows who trains it from the moment it runs.
        trial.set_user_attr(attrs.WORKER, default_worker_id())
        stored = stored_record(trial, self.settings.objectives)
        try:
            values = self._run(trial, stored)
        except optuna.TrialPruned as exc:
            self._outcome(trial.number, f"pruned {exc}")
            raise
        except TrialInterrupted:
            trial.set_user_attr(attrs.INTERRUPTED, True)
            self._outcome(trial.number, "interrupted: checkpointed and handed back")
            raise
        except TRIAL_FAILURES as exc:
            trial.set_user_attr(attrs.FAIL_REASON, f"{type(exc).__name__}: {exc}")
            self._outcome(trial.number, f"failed: {type(exc).__name__}: {exc}")
            raise
        except Exception as exc:
            # A bug or an unexpected library error: record why, then let the worker stop.
            trial.set_user_attr(attrs.FAIL_REASON, f"{type(exc).__name__}: {exc}")
            raise
        took = time.monotonic() - started
        text = ", ".join(
            f"{n} {_fmt(v)}" for n, v in zip(self.settings.objectives, values, strict=True)
        )
        rejected = trial.user_attrs.get(attrs.REJECTED)
        self._outcome(
            trial.number, f"rejected ({rejected})" if rejected else f"{text} ({took:.0f}s)"
        )
        return values

    # -- steps -----------------------------------------------------------------------------------

    def _candidate(self, trial: optuna.Trial, stored: TrialRecord) -> Candidate:
        """The sampler's candidate, or the whole one a scaling rule put in the queue (it may lie
        outside the space, so it is not expressed as parameters); trained for the study's budget."""
        if attrs.FIXED_CANDIDATE in stored.problems:
            raise SpecError(stored.problems[attrs.FIXED_CANDIDATE])
        candidate = stored.fixed_candidate
        if candidate is None:
            return self.space.sample(trial, epochs=self.settings.budget_epochs)
        return replace(
            candidate, recipe=replace(candidate.recipe, epochs=self.settings.budget_epochs)
        )

    def _run(self, trial: optuna.Trial, stored: TrialRecord) -> tuple[float, ...]:
        candidate = self._candidate(trial, stored)
        arch = candidate.arch
        trial.set_user_attr(attrs.ARCH, arch.to_dict())
        trial.set_user_attr(attrs.ARCH_KEY, arch.key())
        trial.set_user_attr(attrs.CANDIDATE, candidate.to_dict())
        trial.set_user_attr(attrs.WORLD_SIZE, self.world_size)
        from rs_search.models.complexity import count_params

        params_m = count_params(arch) / 1e6
        trial.set_user_attr(attrs.PARAMS_M, round(params_m, 4))

        figures = self.latency.figures(arch)
        trial.set_user_attr(attrs.LATENCY_MS, figures.median_ms)
        trial.set_user_attr(attrs.LATENCY_P90_MS, figures.p90_ms)
        trial.set_user_attr(attrs.MEMORY_MB, figures.memory_mb)
        trial.set_user_attr(attrs.LATENCY_PROFILE, figures.profile)

        broken = self._constrain(trial, figures, params_m, already=stored.constraints)
        if broken:
            trial.set_user_attr(attrs.REJECTED, "; ".join(broken))
            return self._values(0.0, figures)
        if self.should_stop():
            raise TrialInterrupted("stopped before training")
        original = self._original(trial, stored, candidate)
        if original is not None:
            self._reuse(trial, original)
        return self._train(trial, stored, candidate, figures)

    def _original(
        self, trial: optuna.Trial, stored: TrialRecord, candidate: Candidate
    ) -> TrialRecord | None:
        """The earliest other trial that trained ``candidate`` to a result (complete and trained,
        or pruned), or None (module docstring, "Repeats"). A retry is not a repeat of the trial
        it stands in for."""
        key = self.space.normalise(candidate).key()
        for frozen in trial.study.get_trials(deepcopy=False):
            if frozen.number == trial.number:
                continue
            known = self._answers.get(frozen.number)
            if known is None:
                record = trial_record(frozen, self.settings.objectives)
                trained = record.state == "COMPLETE" and record.rejected is None
                if not (trained or record.state == "PRUNED"):
                    continue  # not finished (or no answer): looked at again next time
                answer = None
                if record.candidate is not None and record.repeat_of is None:
                    answer = self.space.normalise(record.candidate).key()
                # a finished trial no longer changes: read it once per worker
                known = self._answers[frozen.number] = (answer, record)
            answer, record = known
            if answer == key and record.retry_origin != stored.retry_origin:
                return record
        return None

    def _reuse(self, trial: optuna.Trial, original: TrialRecord) -> NoReturn:
        """End a repeat (module docstring, "Repeats"): pruned, its original's result standing."""
        trial.set_user_attr(attrs.REPEAT_OF, original.number)
        if original.state == "PRUNED":
            where = f" at epoch {original.epochs_trained}" if original.curve else ""
            result = f"which was pruned{where}"
        else:
            result = "whose result stands for it"
        raise optuna.TrialPruned(f"a repeat of trial {original.number}, {result}: nothing trained")

    def _constrain(
        self,
        trial: optuna.Trial,
        figures: LatencyFigures,
        params_m: float,
        already: Mapping[str, float],
    ) -> list[str]:
        """Set every limit of the study as a constraint (a retry inherits them); return the
        broken ones in words."""
        measured = {
            "max_latency_ms": (figures.median_ms, "latency", "ms"),
            "max_memory_mb": (figures.memory_mb, "memory", "MB"),
            "max_params_m": (params_m, "params", "M"),
        }
        broken = []
        for name, limit in sorted(self.settings.constraints.items()):
            value, word, unit = measured[name]
            if name not in already:
                trial.set_constraint(name, float(value) - float(limit))
            if value > limit:
                broken.append(
                    f"{word} {value:.4g} {unit} > {name} {limit:g} {unit} on {figures.profile}"
                )
        return broken

    def _values(self, top1: float, figures: LatencyFigures) -> tuple[float, ...]:
        out = []
        for name in self.settings.objectives:
            out.append(
                top1
                if name == "accuracy"
                else figures.median_ms
                if name == "latency"
                else figures.memory_mb
            )
        return tuple(float(v) for v in out)

    def _train(
        self,
        trial: optuna.Trial,
        stored: TrialRecord,
        candidate: Candidate,
        figures: LatencyFigures,
    ) -> tuple[float, ...]:
        origin = stored.retry_origin
        out_dir = self.checkpoints.trial_dir(self.study_name, origin)
        out_dir.mkdir(parents=True, exist_ok=True)
        self.checkpoints.fetch(stored.checkpoint_artifact, out_dir)  # a retry on another machine
        # a retry starts with its original's curve
        state = _Progress(curve=[dict(row) for row in stored.curve])
        rungs = set(self.settings.rungs)

        def on_epoch(metrics: Any) -> bool:
            row = metrics.to_dict()
            epoch = int(row["epoch"])
            if state.first_epoch is None:
                state.first_epoch = epoch
                state.curve = [r for r in state.curve if int(r["epoch"]) < epoch]
                if epoch > 1:
                    trial.set_user_attr(attrs.RESUMED_FROM, epoch - 1)
            state.curve.append(row)
            trial.set_user_attr(attrs.CURVE, state.curve)
            self.checkpoints.push(trial, out_dir)
            if epoch in rungs and self.settings.eta is not None:
                decision = self._decide(trial, stored, epoch, float(row["val_top1"]), figures)
                state.decisions.append(decision.to_dict())
                trial.set_user_attr(attrs.HALVING, state.decisions)
                if not decision.keep:
                    state.pruned = decision
                    return False
            return True

        # resume=True: continue from the newest good checkpoint in the origin's directory (a
        # retry's), a fresh start when there is none.
        try:
            result = self.launcher(
                candidate,
                out_dir=out_dir,
                resume=True,
                seed=origin,
                on_epoch=on_epoch,
                should_stop=self.should_stop,
            )
        except TrialInterrupted:
            self.checkpoints.push(trial, out_dir)  # the mid-epoch checkpoint, for the retry
            raise
        full = [m.to_dict() for m in getattr(result, "curve", [])]
        if full and len(full) >= len(state.curve):
            # The engine's curve includes the epochs of the checkpoint it resumed from.
            state.curve = full
            trial.set_user_attr(attrs.CURVE, state.curve)
        if state.pruned is not None:
            raise optuna.TrialPruned(state.pruned.reason())
        if not state.curve:
            raise RuntimeError(f"training of trial {trial.number} reported no epoch")
        final = state.curve[-1]
        done = int(final["epoch"])
        if done < self.settings.budget_epochs:
            # The engine stopped early without a rung decision (it should not); do not report a
            # short run as a full-budget result.
            raise RuntimeError(
                f"trial {trial.number} stopped at epoch {done} of "
                f"{self.settings.budget_epochs} (engine result {result!r})"
            )
        top1 = float(final["val_top1"])
        if math.isnan(top1):
            raise TrainingDiverged(f"validation top-1 is NaN at epoch {done}")
        return self._values(top1, figures)

    def _decide(
        self,
        trial: optuna.Trial,
        stored: TrialRecord,
        epoch: int,
        top1: float,
        figures: LatencyFigures,
    ) -> halving.Decision:
        assert self.settings.eta is not None
        trial.set_user_attr(attrs.rung_attr(epoch), top1)
        objectives = self.settings.objectives
        measured = Measurements(latency_ms=figures.median_ms, memory_mb=figures.memory_mb)
        me = halving.objective_point(top1, measured, objectives)
        assert me is not None
        records = study_records(trial.study, objectives)
        field_ = halving.rung_points(records, epoch, objectives)
        origin = stored.retry_origin
        field_[origin] = me
        origins = sorted(field_)
        decision = halving.decide(
            [field_[o] for o in origins],
            origins.index(origin),
            directions=self.settings.directions,
            eta=self.settings.eta,
            epoch=epoch,
        )
        evidence = halving.rung_evidence(records, epoch)
        decision = halving.with_evidence(decision, evidence)
        if (why := halving.exemption(stored)) is not None:
            decision = halving.exempt(decision, why)
        elif (
            why := halving.regime_exemption(evidence, _params_m(records, trial.number))
        ) is not None:
            decision = halving.exempt(decision, why)
        _log.info("trial %d: %s", trial.number, decision.reason())
        return decision

    def _outcome(self, number: int, summary: str) -> None:
        if self.on_outcome is not None:
            self.on_outcome(TrialOutcome(number=number, summary=summary))


@dataclass
class _Progress:
    curve: list[dict[str, Any]]
    first_epoch: int | None = None
    decisions: list[dict[str, Any]] = field(default_factory=list)
    pruned: halving.Decision | None = None


def _params_m(records: list[TrialRecord], number: int) -> float | None:
    """The running trial's parameter count as it stored it (``_run`` sets it before training)."""
    return next((r.measured.params_m for r in records if r.number == number), None)


def _fmt(value: float) -> str:
    return f"{value:.2f}" if abs(value) >= 1 else f"{value:.3g}"
