"""``rs-search status``: where a running search stands, as plain data (printed as text or JSON).

Live workers come from Optuna's heartbeats: a worker runs its trial inside ``study.optimize``,
which writes a heartbeat every ``heartbeat_interval`` seconds (DESIGN.md section 5; read by
``rs_search.study.storage.heartbeat_ages``). A RUNNING trial whose heartbeat is younger than the
study's grace period has a live worker; an older one is stale (its worker died; the next worker
to ask fails it and queues a retry).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from rs_search.reports.fidelity import fidelity_data, fidelity_line
from rs_search.reports.front import cost_objective, ranks
from rs_search.study.read import StudyInfo
from rs_search.study.record import TrialRecord, compute_spent, curve_series

STATES = ("RUNNING", "WAITING", "COMPLETE", "PRUNED", "FAIL")


@dataclass(frozen=True, kw_only=True)
class WorkerRow:
    """A running trial and the worker training it."""

    trial: int
    worker: str | None  # host:pid the trial runs on
    config: str
    epoch: int  # epochs finished so far
    epochs: int | None  # the trial's training length
    val_top1: float | None  # at the last finished epoch
    heartbeat_age_s: float | None  # None: no heartbeat recorded (not run through study.optimize)
    live: bool


@dataclass(frozen=True, kw_only=True)
class FrontRow:
    trial: int
    config: str
    values: tuple[float, ...]


@dataclass(frozen=True, kw_only=True)
class FidelityRow:
    """A rung's rank agreement with the final top-1 (``rs_search.reports.fidelity``)."""

    epoch: int
    tau: float | None  # Kendall tau-b; None when undefined
    trials: int  # trials that trained past the rung to the full budget
    warn: bool  # judged and below the trust threshold (a project heuristic)
    line: str  # what the report prints for it


@dataclass(frozen=True, kw_only=True)
class StudyStatus:
    study: str
    target: str
    objectives: tuple[str, ...]
    states: Mapping[str, int]  # Optuna TrialState name -> count, every state listed
    total: int  # every trial, retries and waiting slots included
    finished: int  # trials that count against the trial budget
    trial_budget: int | None
    workers: tuple[WorkerRow, ...]
    live_workers: int
    stale_trials: int
    epochs_spent: int
    epochs_budget: int | None  # trials x full budget: an upper bound (halving stops trials early)
    device_hours: float
    front: tuple[FrontRow, ...]
    eta_s: float | None  # seconds until the trial budget is spent, at the rate so far
    eta_basis: str  # how the ETA was found, or why there is none
    fidelity: tuple[FidelityRow, ...] = ()  # per rung epoch, ascending

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def study_status(
    records: Sequence[TrialRecord],
    info: StudyInfo,
    *,
    heartbeats: Mapping[int, float],
    now: datetime,
    finished: int | None = None,
) -> StudyStatus:
    """Pure: the status of a study from its records and the heartbeat ages.

    ``finished`` is the number of trials that count against the trial budget (the worker's own
    rule, ``TrialRecord.finished``); by default every complete, pruned or failed trial. The ETA
    divides the trials left in the budget by the rate at which trials finished since the first
    one started.
    """
    counts = Counter(r.state for r in records)
    states = {state: counts.get(state, 0) for state in STATES}
    workers = tuple(
        WorkerRow(
            trial=r.number,
            worker=r.worker,
            config=r.label,
            epoch=r.epochs_trained,
            epochs=r.budget_epochs,
            val_top1=_last(r, "val_top1"),
            heartbeat_age_s=heartbeats.get(r.number),
            live=r.number in heartbeats and heartbeats[r.number] <= info.grace_s,
        )
        for r in records
        if r.state == "RUNNING"
    )
    spent = compute_spent(records)
    objectives = info.objectives
    usable = [r for r in records if r.usable]
    front_ranks = ranks([r.point(objectives) for r in usable], objectives)
    cost = cost_objective(objectives)
    front = tuple(
        FrontRow(trial=r.number, config=r.label, values=r.point(objectives))
        for r, rank in sorted(
            zip(usable, front_ranks, strict=True), key=lambda pair: pair[0].value(cost) or 0.0
        )
        if rank == 0
    )
    if finished is None:
        finished = states["COMPLETE"] + states["PRUNED"] + states["FAIL"]
    eta, basis = _eta(records, info, finished=finished, now=now)
    return StudyStatus(
        study=info.name,
        target=info.target,
        objectives=info.objectives,
        states=states,
        total=len(records),
        finished=finished,
        trial_budget=info.trial_budget,
        workers=workers,
        live_workers=sum(1 for w in workers if w.live),
        stale_trials=sum(1 for w in workers if w.heartbeat_age_s is not None and not w.live),
        epochs_spent=sum(s.epochs for s in spent.values()),
        epochs_budget=info.epochs_budget,
        device_hours=sum(s.seconds for s in spent.values()) / 3600.0,
        front=front,
        eta_s=eta,
        eta_basis=basis,
        fidelity=tuple(
            FidelityRow(
                epoch=r.epoch,
                tau=r.tau,
                trials=r.agreement.n,
                warn=r.warn,
                line=fidelity_line(r),
            )
            for r in fidelity_data(records).rungs
        ),
    )


def _last(record: TrialRecord, key: str) -> float | None:
    return curve_series(record, key)[-1] if record.curve else None


def _eta(
    records: Sequence[TrialRecord], info: StudyInfo, *, finished: int, now: datetime
) -> tuple[float | None, str]:
    if info.trial_budget is None:
        return None, "open-ended study (no trial budget)"
    left = max(0, info.trial_budget - finished)
    if left == 0:
        return 0.0, "trial budget spent"
    starts = [r.datetime_start for r in records if r.datetime_start is not None]
    if not finished or not starts:
        return None, "no trial has finished yet"
    elapsed = (now - min(starts)).total_seconds()
    if elapsed <= 0:
        return None, "no time has passed yet"
    rate = finished / elapsed
    return left / rate, f"{finished} trials finished in {elapsed / 3600:.2f} h; {left} left"
