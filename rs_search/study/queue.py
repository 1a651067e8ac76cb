"""The study's queue of waiting trials: claiming one, filling the budget, proposals, hand-back.

**The trial budget is a queue.** ``start --trials N`` enqueues N trials in Optuna's own WAITING
state: first the space's seeds (fixed params), then empty slots that the sampler fills when a
worker claims them. Workers only ever claim a waiting trial (:class:`QueuedStudy`), and Optuna
claims a waiting trial atomically (an UPDATE that only one worker wins), so however many workers
on however many machines join, exactly N trials run: no counter races, and the dashboard shows the
remaining budget as waiting trials. A trial whose worker died is failed by the heartbeat and its
retry is enqueued in its place (``RetryHeartbeatStaleTrialCallback``), so it keeps its slot.
Without ``--trials`` the study is open-ended and workers create trials as ``study.optimize``
normally does.

A scaling rule's proposal takes over the next empty budget slot (so it runs next and the budget
stays N trials), or is appended when there is none. This module and ``storage`` are the only code
that touches Optuna's private names (``Study._pop_waiting_trial_id``, ``Study._storage``,
``Trial._trial_id``) and the ``fixed_params`` system attribute ``enqueue_trial`` is built on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import RetryHeartbeatStaleTrialCallback, fail_stale_trials
from optuna.trial import FrozenTrial, TrialState

from rs_search.study import attrs
from rs_search.study.read import study_records
from rs_search.study.record import TrialRecord, count_states, trial_record

if TYPE_CHECKING:
    from rs_search.space import SearchSpace
    from rs_search.study.settings import StudySettings


class QueueEmpty(Exception):
    """No waiting trial to claim: the trial budget is spent or claimed by other workers."""


class QueuedStudy(optuna.Study):
    """A ``Study`` whose ``ask`` claims a waiting trial and never creates one.

    Mirrors ``Study.ask`` (5.0) minus the creation branch; it relies on Optuna's internal
    ``_pop_waiting_trial_id`` (the atomic claim ``enqueue_trial`` is built on; the storage makes
    an ambiguous claim safe, ``ResilientStorage.set_trial_state_values``).
    """

    def ask(self, fixed_distributions: dict[str, Any] | None = None) -> optuna.Trial:
        assert not fixed_distributions, "the search does not pass fixed distributions"
        self._thread_local.cached_all_trials = None
        trial_id = self._pop_waiting_trial_id()
        if trial_id is None:
            raise QueueEmpty()
        return optuna.Trial(self, trial_id)


def enqueue_work(
    study: optuna.Study, settings: StudySettings, space: SearchSpace
) -> tuple[int, int]:
    """Enqueue the seeds not yet present, then budget slots up to ``settings.n_trials``.

    Returns (seeds enqueued, slots enqueued). Call from one place (``start``), not from every
    worker: ``enqueue_trial(skip_if_exists=True)`` is not atomic across processes.
    """
    records = study_records(study, settings.objectives)
    counts = count_states(records)
    used = counts["finished"] + counts["running"] + counts["waiting"]
    room = None if settings.n_trials is None else max(0, settings.n_trials - used)
    present = {r.seed_name for r in records}
    seeds = 0
    for seed in space.seeds:
        if room is not None and seeds >= room:
            break
        if seed.name in present:
            continue
        study.enqueue_trial(
            space.seed_params(seed), user_attrs={attrs.SEED_NAME: seed.name}, skip_if_exists=True
        )
        seeds += 1
    slots = 0
    if settings.n_trials is not None:
        waiting = len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
        start_index = sum(1 for r in records if r.slot is not None)
        need = settings.n_trials - (counts["finished"] + counts["running"] + waiting)
        for i in range(max(0, need)):
            study.enqueue_trial({}, user_attrs={attrs.SLOT: start_index + i})
            slots += 1
    return seeds, slots


def claim_worker_indexes(study: optuna.Study, count: int) -> int:
    """The first of ``count`` worker indexes no ``start`` of this study has handed out yet, now
    taken (``start``'s k-th local worker samples with the study's seed + its index: two starts
    of one study at once both handed out index 0, and their workers sampled the same candidates).
    Call under ``start``'s lock (``rs_search.storage.locks.advisory_lock``)."""
    first = int(study.user_attrs.get(attrs.WORKERS_STARTED, 0))
    if count > 0:
        study.set_user_attr(attrs.WORKERS_STARTED, first + count)
    return first


def top_up_slots(study: optuna.Study, spare: int, objectives: Sequence[str]) -> int:
    """Enqueue empty budget slots until ``spare`` are waiting; returns how many were added. Reads
    only the waiting trials (``enqueue_work`` reads them all), for a caller that keeps a budget
    open as it goes: the tabular replay (``rs_search.bench.replay``) tops up after every trial."""
    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    empty = sum(1 for t in waiting if trial_record(t, objectives).is_empty_slot)
    index = len(study.get_trials(deepcopy=False))  # unique: no slot has an index this high yet
    for i in range(max(0, spare - empty)):
        study.enqueue_trial({}, user_attrs={attrs.SLOT: index + i})
    return max(0, spare - empty)


@dataclass(frozen=True, kw_only=True)
class Queued:
    number: int | None  # None: nothing was enqueued (the same parameters are queued already)
    how: str  # "slot": took over an empty budget slot; "appended"; "duplicate"


def enqueue_candidate(
    study: optuna.Study,
    *,
    params: Mapping[str, Any],
    user_attrs: Mapping[str, Any],
    use_slot: bool,
    objectives: Sequence[str],
) -> Queued:
    """Queue a trial with fixed ``params`` and ``user_attrs``: in the first empty budget slot when
    ``use_slot`` (a study with a trial budget), else (or when none is left) appended."""
    if use_slot:
        for slot in study_records(study, objectives):
            if slot.is_empty_slot and _take_slot(study, slot.number, params, user_attrs):
                return Queued(number=slot.number, how="slot")
    before = {t.number for t in study.get_trials(deepcopy=False)}
    study.enqueue_trial(dict(params), user_attrs=dict(user_attrs), skip_if_exists=True)
    new = [
        t.number
        for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        if t.number not in before
    ]
    return Queued(number=new[0], how="appended") if new else Queued(number=None, how="duplicate")


def _take_slot(
    study: optuna.Study, number: int, params: Mapping[str, Any], user_attrs: Mapping[str, Any]
) -> bool:
    """Turn an empty waiting budget slot into this trial.

    The slot is claimed the way Optuna claims a waiting trial (WAITING -> RUNNING, which only one
    process wins), given its fixed parameters and attributes, and put back to WAITING; no worker
    can start it half-written. Returns False when another process claimed it first.
    """
    storage = study._storage
    trial_id = storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
    try:
        if not storage.set_trial_state_values(trial_id, state=TrialState.RUNNING):
            return False
    except UpdateFinishedTrialError:
        return False
    try:
        storage.set_trial_system_attr(trial_id, attrs.FIXED_PARAMS, dict(params))
        for key, value in user_attrs.items():
            storage.set_trial_user_attr(trial_id, key, value)
    finally:
        storage.set_trial_state_values(trial_id, state=TrialState.WAITING)
    return True


def fail_stale(study: optuna.Study) -> None:
    """Fail the trials whose worker stopped beating; the storage's callback queues their
    retries (a no-op for a storage without heartbeats)."""
    fail_stale_trials(study)


def hand_back(study: optuna.Study, number: int) -> None:
    """Queue a retry of an interrupted trial (params, user attrs, ``failed_trial``), unless the
    trial did not end as FAIL or failed for a reason of its own (then nothing was lost)."""
    trial = study.get_trials(deepcopy=True)[number]
    if trial.state != TrialState.FAIL or attrs.FAIL_REASON in trial.user_attrs:
        return
    RetryHeartbeatStaleTrialCallback(max_retry=None)(study, trial)


def stored_record(trial: optuna.Trial, objectives: Sequence[str]) -> TrialRecord:
    """The running trial as stored, system attributes included (``Trial`` exposes none)."""
    return trial_record(trial.storage.get_trial(trial._trial_id), objectives)


def after_each_trial(
    hook: Callable[[optuna.Study, TrialRecord], None], objectives: Sequence[str]
) -> Callable[[optuna.Study, FrozenTrial], None]:
    """An ``optimize(callbacks=[...])`` callback that hands ``hook`` the finished trial's record."""

    def callback(study: optuna.Study, trial: FrozenTrial) -> None:
        hook(study, trial_record(trial, objectives))

    return callback
