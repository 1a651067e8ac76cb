"""Replay a search method on a benchmark table: the real search code, training answered from
recorded curves (issue 11 item 2; HPOBench, YAHPO Gym and NAS-Bench-201 measure methods so).

What runs is what ``rs-search worker`` runs, one worker, in one process:

- the study layer: the study's settings (``settings_from_space``: rungs, the default lowest rung),
  the queue (``enqueue_work``: seeds first, then budget slots that a ``QueuedStudy`` claims), the
  study's sampler (``make_sampler``, seeded as ``start --seed S`` seeds its first worker);
- the search: ``Objective`` (sampling, constraints, the repeat policy, rung decisions with
  ``halving.decide`` and its exemptions) and, with ``auto_scale``, the worker's ``AutoScale``
  hook, whose proposals take over the next empty slot;
- training and latency from the table (``rs_search.bench.answer``).

The study lives in Optuna's in-memory storage by default (fast: a replay of a 36-candidate table
takes about a second); pass a SQLAlchemy URL to run it through the study layer's RDB storage and
``join_study`` exactly as a worker joins (the equivalence test does).

**Budget.** With ``trials`` the study gets that trial budget and the replay ends when it is
spent, as ``start --trials`` does. With ``compute`` (epochs) the replay keeps two empty slots in
the queue (``queue.top_up_slots``) and starts trials until the epochs trained reach ``compute``: a
method that prunes gets more trials for the same compute, which is the comparison issue 11 asks
for. Skipped candidates (not in the table, ``answer.NotInTable``: pruned before their first epoch)
and repeats (pruned untrained, ``rs_search.search.objective``) cost nothing; ``max_idle`` such
trials in a row end a run (a sampler stuck on what it has seen, or outside a sampled table).

A run is a list of :class:`TrialEvent` in the order the trials finished (one worker: sequential),
each with the epochs it trained; the front after any amount of compute follows from it
(:meth:`Run.front_at`). Nothing here reads a clock, so a replay is a pure function of the table,
the method and the seed.
"""

from __future__ import annotations

import math
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import optuna

from rs_search.bench.answer import TableAnswers, TableLatency, TableLauncher
from rs_search.bench.metrics import hypervolume_fraction, reference_point, table_points
from rs_search.bench.table import Table, candidate_label
from rs_search.search.deps import LatencyUnavailable
from rs_search.search.objective import TRIAL_FAILURES, Objective
from rs_search.study.record import TrialRecord, count_states, trial_record
from rs_search.study.settings import StudySettings

__all__ = [
    "DEFAULT_MAX_IDLE",
    "Method",
    "Run",
    "TrialEvent",
    "median_iqr",
    "replay",
    "standard_methods",
    "table_reference",
]

#: Trials in a row that trained nothing (skipped: not in the table; repeats) after which a run
#: ends. Project heuristic: a sampler that asked this many times without proposing anything new
#: in the table will not spend the rest of its compute soon.
DEFAULT_MAX_IDLE = 100
_STUDY = "replay"
_SPARE_SLOTS = 2  # empty slots kept queued in a compute-budget run (room for a rule proposal)

State = Literal["complete", "pruned", "repeat", "skipped", "failed", "rejected"]


@dataclass(frozen=True, kw_only=True)
class Method:
    """A search method: rs-search's worker with a sampler and (optionally) halving and the
    scaling rules, or Syne Tune's MO-ASHA (``engine="syne-tune"``, ``rs_search.bench.moasha``)."""

    name: str
    sampler: str = "tpe"  # tpe | nsga2 | gp | random (rs-search's engine)
    halving: bool = True
    eta: int = 3
    min_rung: int | None = None  # None: the search's default (halving.default_min_rung)
    auto_scale: bool = False
    engine: Literal["rs-search", "syne-tune"] = "rs-search"

    def describe(self) -> str:
        if self.engine == "syne-tune":
            return f"Syne Tune MO-ASHA (eta {self.eta}, random search)"
        parts = [self.sampler, f"halving eta {self.eta}" if self.halving else "no halving"]
        if self.auto_scale:
            parts.append("auto-scale")
        return ", ".join(parts)


def standard_methods(default: Method) -> tuple[Method, ...]:
    """Issue 11's field: rs-search's ``default`` (what ``rs-search start`` does without flags),
    TPE, NSGA-II and random each with and without halving, GP without, and MO-ASHA."""
    out = [replace(default, name="rs-search default")]
    for sampler in ("tpe", "nsga2", "random"):
        for halving in (True, False):
            word = "halving" if halving else "no halving"
            out.append(Method(name=f"{sampler}, {word}", sampler=sampler, halving=halving))
    out.append(Method(name="gp, no halving", sampler="gp", halving=False))
    out.append(Method(name="MO-ASHA (Syne Tune)", engine="syne-tune"))
    return tuple(out)


@dataclass(frozen=True, kw_only=True)
class TrialEvent:
    """One finished trial. ``epochs``: what it trained itself; ``spent``: the run's total after
    it. ``point``: (top-1 at the full budget, latency) when it completed training (a repeat's
    point is its original's, already counted)."""

    number: int
    origin: str  # seed | sampler | rule:<name> | moasha
    state: State
    key: str | None  # the candidate's canonical key (None: no candidate)
    raw_key: str | None  # its key as sampled (differs from ``key`` for a no-effect variant)
    label: str
    epochs: int
    flops: float
    spent: int
    point: tuple[float, float] | None = None
    decisions: tuple[tuple[int, bool], ...] = ()  # (rung epoch, continues)
    repeat_of: int | None = None
    why: str | None = None  # a skipped or failed trial's reason


@dataclass(frozen=True, kw_only=True)
class Run:
    method: Method
    seed: int
    events: tuple[TrialEvent, ...]
    stopped: str  # why the run ended

    @property
    def spent(self) -> int:
        return self.events[-1].spent if self.events else 0

    @property
    def flops(self) -> float:
        return sum(e.flops for e in self.events)

    def front_at(self, epochs: float) -> list[tuple[float, float]]:
        """(top-1, latency) of the trials that completed training within ``epochs`` of compute."""
        return [e.point for e in self.events if e.point is not None and e.spent <= epochs]

    def hypervolume_at(self, table: Table, epochs: float, reference: Sequence[float]) -> float:
        """Hypervolume fraction of the table's true front reached within ``epochs``."""
        points = self.front_at(epochs)
        return hypervolume_fraction(points, table, reference) if points else 0.0

    def front_tried(self, front: set[str]) -> tuple[int, int]:
        """(true-front candidates this run trained and halving pruned before completing, true-front
        candidates it trained at all): the real, asynchronous rule's front loss on this run."""
        tried = {e.key for e in self.events if e.key in front and e.epochs > 0}
        completed = {e.key for e in self.events if e.key in front and e.state == "complete"}
        return len(tried - completed), len(tried)

    def count(self, state: State, *, origin: str | None = None) -> int:
        return sum(
            1
            for e in self.events
            if e.state == state and (origin is None or e.origin.startswith(origin))
        )

    @property
    def exact_repeats(self) -> int:
        """Trials whose candidate, as sampled, an earlier trial of the run had (any state)."""
        seen: set[str] = set()
        out = 0
        for e in self.events:
            if e.raw_key is None:
                continue
            out += e.raw_key in seen
            seen.add(e.raw_key)
        return out

    @property
    def no_effect_variants(self) -> int:
        """Trials that differ from an earlier one only in a parameter with no effect
        (``rs_search.space.INACTIVE``): same canonical key, another key as sampled."""
        raw: dict[str, set[str]] = {}
        out = 0
        for e in self.events:
            if e.key is None or e.raw_key is None:
                continue
            spellings = raw.setdefault(e.key, set())
            out += bool(spellings) and e.raw_key not in spellings
            spellings.add(e.raw_key)
        return out


def table_reference(table: Table) -> tuple[float, float]:
    """The reference point every hypervolume of a comparison on ``table`` uses."""
    _, points = table_points(table)
    return reference_point(points)


# -- the rs-search engine ------------------------------------------------------------------------


def replay(
    table: Table,
    method: Method,
    *,
    seed: int,
    compute: int | None = None,
    trials: int | None = None,
    storage: str | None = None,
    workdir: Path | None = None,
    max_idle: int = DEFAULT_MAX_IDLE,
    answers: TableAnswers | None = None,
) -> Run:
    """Run ``method`` on ``table`` with sampler seed ``seed`` until ``compute`` epochs are spent
    or the ``trials`` budget is (exactly one of them; module docstring)."""
    if (compute is None) == (trials is None):
        raise ValueError("give exactly one of compute (epochs) and trials")
    answers = answers or TableAnswers(table)
    if method.engine == "syne-tune":
        from rs_search.bench.moasha import replay_moasha

        if compute is None:
            raise ValueError("MO-ASHA replays take a compute budget")
        return replay_moasha(table, method, seed=seed, compute=compute, answers=answers)
    with tempfile.TemporaryDirectory(prefix="rs-search-replay-") as scratch:
        return _replay(
            table,
            method,
            seed=seed,
            compute=compute,
            trials=trials,
            storage=storage,
            workdir=workdir or Path(scratch),
            max_idle=max_idle,
            answers=answers,
        )


def _replay(
    table: Table,
    method: Method,
    *,
    seed: int,
    compute: int | None,
    trials: int | None,
    storage: str | None,
    workdir: Path,
    max_idle: int,
    answers: TableAnswers,
) -> Run:
    from rs_search.search.artifacts import CheckpointStore
    from rs_search.search.settings import settings_from_space
    from rs_search.study.queue import QueueEmpty, after_each_trial, enqueue_work, top_up_slots

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    space = table.header.space
    settings = settings_from_space(
        space,
        budget_epochs=table.header.budget_epochs,
        data=table.header.data,
        eta=method.eta if method.halving else None,
        min_rung=method.min_rung,
        n_trials=trials if trials is not None else _SPARE_SLOTS + len(space.seeds),
        sampler=method.sampler,
        seed=seed,
        heartbeat_interval=30,
        grace_period=120,
        artifacts=str(workdir),
    )
    study, settings = _open_study(settings, storage, workdir)
    enqueue_work(study, settings, space)
    launcher = TableLauncher(answers)
    objective = Objective(
        study_name=_STUDY,
        settings=settings,
        space=settings.search_space(),
        latency=TableLatency(answers),
        launcher=launcher,
        checkpoints=CheckpointStore(workdir / "checkpoints"),
    )
    callbacks: list[Any] = []
    if method.auto_scale:
        from rs_search.search.proposals import AutoScale

        callbacks.append(after_each_trial(AutoScale(settings=settings), settings.objectives))
    catch = (*TRIAL_FAILURES, LatencyUnavailable)
    events: list[TrialEvent] = []
    idle = 0
    stopped = "budget spent"
    while True:
        if compute is not None:
            if launcher.spent_epochs >= compute:
                stopped = "compute spent"
                break
            top_up_slots(study, _SPARE_SLOTS, settings.objectives)
        else:
            counts = count_states(_records(study, settings))
            if counts["finished"] >= (settings.n_trials or 0) or counts["waiting"] == 0:
                break
        if idle >= max_idle:
            stopped = f"{max_idle} trials in a row trained nothing"
            break
        before_epochs, before_flops = launcher.spent_epochs, launcher.spent_flops
        answers.skipped = None
        try:
            study.optimize(objective, n_trials=1, catch=catch, callbacks=callbacks)
        except QueueEmpty:
            stopped = "queue empty"
            break
        number = objective.current
        assert number is not None
        record = trial_record(study.get_trials(deepcopy=False)[number], settings.objectives)
        event = _event(
            record,
            answers,
            epochs=launcher.spent_epochs - before_epochs,
            flops=launcher.spent_flops - before_flops,
            spent=launcher.spent_epochs,
            budget=settings.budget_epochs,
            skipped=answers.skipped,
            earlier=events,
        )
        events.append(event)
        idle = idle + 1 if event.state in ("skipped", "repeat") else 0
    return Run(method=method, seed=seed, events=tuple(events), stopped=stopped)


def _open_study(
    settings: StudySettings, storage: str | None, workdir: Path
) -> tuple[optuna.Study, StudySettings]:
    """A fresh study with ``settings``, joined as ``start``'s first local worker joins it."""
    from rs_search.search.study import create_or_resume, join_study, make_sampler, worker_seed
    from rs_search.study.queue import QueuedStudy

    if storage is not None:
        space = settings.search_space()
        create_or_resume(study_name=_STUDY, storage=storage, settings=settings, space=space)
        return join_study(_STUDY, storage, worker_index=0)
    memory = optuna.storages.InMemoryStorage()
    optuna.create_study(
        study_name=_STUDY,
        storage=memory,
        directions=[optuna.study.StudyDirection[d.upper()] for d in settings.directions],
    )
    study = QueuedStudy(
        study_name=_STUDY,
        storage=memory,
        sampler=make_sampler(settings, seed=worker_seed(settings, 0)),
    )
    for key, value in settings.user_attrs().items():
        study.set_user_attr(key, value)
    return study, settings


def _records(study: optuna.Study, settings: StudySettings) -> list[TrialRecord]:
    from rs_search.study.read import study_records

    return study_records(study, settings.objectives)


def _event(
    record: TrialRecord,
    answers: TableAnswers,
    *,
    epochs: int,
    flops: float,
    spent: int,
    budget: int,
    skipped: str | None,
    earlier: Sequence[TrialEvent],
) -> TrialEvent:
    candidate = record.candidate or record.fixed_candidate or record.proposal
    key = answers.key(candidate) if candidate is not None else None
    raw = candidate.key() if candidate is not None else None
    reason = skipped or record.fail_reason or ""
    state: State
    point = None
    skipped_before = {e.number for e in earlier if e.state == "skipped"}
    if skipped is not None or (record.state == "PRUNED" and record.repeat_of in skipped_before):
        state = "skipped"  # not in the table (again: a repeat of a skipped candidate)
        reason = reason or f"a repeat of trial {record.repeat_of}, not in the table"
    elif record.state == "FAIL":
        state = "failed"
    elif record.state == "PRUNED":
        state = "repeat" if record.repeat_of is not None else "pruned"
    elif record.rejected is not None:
        state = "rejected"
    elif record.repeat_of is not None:
        state = "repeat"
    else:
        state = "complete"
        assert record.values is not None and len(record.curve) == budget
        point = (record.values["accuracy"], record.values["latency"])
    return TrialEvent(
        number=record.number,
        origin=record.origin,
        state=state,
        key=key,
        raw_key=raw,
        label=candidate_label(candidate) if candidate is not None else f"#{record.number}",
        epochs=epochs,
        flops=flops,
        spent=spent,
        point=point,
        decisions=tuple(
            (int(d["epoch"]), bool(d["keep"]))
            for d in record.halving
            if isinstance(d.get("epoch"), int)
        ),
        repeat_of=record.repeat_of,
        why=reason or None,
    )


def median_iqr(values: Sequence[float]) -> tuple[float, float, float]:
    """(median, 25th, 75th percentile); nan for no values."""
    import numpy as np

    if not values:
        return math.nan, math.nan, math.nan
    q25, q50, q75 = np.percentile(np.asarray(values, dtype=float), [25, 50, 75])
    return float(q50), float(q25), float(q75)
