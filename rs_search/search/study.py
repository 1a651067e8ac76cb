"""Create, resume and join a study; enqueue seeds and the trial budget.

**The trial budget is a queue.** ``start --trials N`` enqueues N trials in Optuna's own WAITING
state: first the space's seeds (fixed params), then empty slots that the sampler fills when a
worker claims them. Workers only ever claim a waiting trial (``QueuedStudy.ask``), and Optuna
claims a waiting trial atomically (an UPDATE that only one worker wins), so however many workers
on however many machines join, exactly N trials run: no counter races, and the dashboard shows the
remaining budget as waiting trials. A trial whose worker died is failed by the heartbeat and its
retry is enqueued in its place (``RetryHeartbeatStaleTrialCallback``), so it keeps its slot.
Without ``--trials`` the study is open-ended and workers create trials as ``study.optimize``
normally does.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import replace
from typing import Any

import optuna
from optuna.study import StudyDirection
from optuna.trial import TrialState

from rs_search.errors import RsSearchError
from rs_search.search import attrs
from rs_search.search.settings import SETTINGS_ATTR, StudySettings
from rs_search.search.storage import count_states, open_storage, study_names, unknown_study_message
from rs_search.space import SearchSpace
from rs_search.storage.url import resolve_storage_url


class QueueEmpty(Exception):
    """No waiting trial to claim: the trial budget is spent or claimed by other workers."""


class QueuedStudy(optuna.Study):
    """A ``Study`` whose ``ask`` claims a waiting trial and never creates one.

    Mirrors ``Study.ask`` (5.0) minus the creation branch; it relies on Optuna's internal
    ``_pop_waiting_trial_id`` (the atomic claim ``enqueue_trial`` is built on).
    """

    def ask(self, fixed_distributions: dict[str, Any] | None = None) -> optuna.Trial:
        assert not fixed_distributions, "the search does not pass fixed distributions"
        self._thread_local.cached_all_trials = None
        trial_id = self._pop_waiting_trial_id()
        if trial_id is None:
            raise QueueEmpty()
        return optuna.Trial(self, trial_id)


def make_sampler(
    settings: StudySettings, *, seed: int | None = None
) -> optuna.samplers.BaseSampler:
    """The study's sampler. Constraints need no ``constraints_func`` in Optuna 5: TPE, NSGA-II
    and GP read the values set with ``trial.set_constraint``."""
    name = settings.sampler
    if name == "tpe":
        # constant_liar: parallel workers do not all sample next to the same running trial.
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True, multivariate=True)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise RsSearchError(f"sampler {name!r}; allowed: tpe, nsga2, gp, random")


def load_settings(study: optuna.Study) -> StudySettings:
    return StudySettings.from_study_attrs(study.user_attrs, study_name=study.study_name)


def join_study(
    study_name: str,
    storage: str | None,
    *,
    queued: bool = True,
    sampler_seed: int | None = None,
) -> tuple[optuna.Study, StudySettings]:
    """Open an existing rs-search study with the process's one storage, heartbeats configured.

    Unknown study: an ``RsSearchError`` listing the studies there; nothing is created.
    """
    url = resolve_storage_url(storage)
    names = study_names(url)
    if study_name not in names:
        raise RsSearchError(unknown_study_message(study_name, names, url))
    rdb = open_storage(url)
    probe = optuna.load_study(study_name=study_name, storage=rdb)
    settings = load_settings(probe)
    interval, grace = settings.heartbeat()
    configure_heartbeat(rdb, interval=interval, grace=grace, max_retry=settings.max_retry)
    cls = QueuedStudy if (queued and settings.n_trials is not None) else optuna.Study
    if sampler_seed is None:
        sampler_seed = worker_seed(settings)
    study = cls(
        study_name=study_name, storage=rdb, sampler=make_sampler(settings, seed=sampler_seed)
    )
    return study, settings


ENV_WORKER_INDEX = "RS_SEARCH_WORKER_INDEX"  # set by `start` for its k-th local worker


def worker_seed(settings: StudySettings) -> int | None:
    """The sampler seed of this worker: ``start --seed S`` gives its k-th local worker S + k
    (distinct streams, so parallel workers do not sample the same candidates); a worker that
    joined from elsewhere samples unseeded."""
    index = os.environ.get(ENV_WORKER_INDEX)
    if settings.seed is None or index is None or not index.isdigit():
        return None
    return settings.seed + int(index)


def configure_heartbeat(rdb: Any, *, interval: int, grace: int, max_retry: int | None) -> None:
    """Turn on Optuna's heartbeat on an open ``RDBStorage`` (the attributes its constructor
    sets)."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    rdb.heartbeat_interval = interval
    rdb.grace_period = grace
    rdb.heartbeat_stale_trial_callback = RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
    rdb.failed_trial_callback = rdb.heartbeat_stale_trial_callback


def differences(old: StudySettings, new: StudySettings) -> list[str]:
    """What would change if ``new`` replaced ``old`` (space and other fixed settings)."""
    out: list[str] = []
    if old.space_fingerprint != new.space_fingerprint:
        old_space = old.search_space()
        new_space = new.search_space()
        out.extend(old_space.differences(new_space) or ["space fingerprint differs"])
    for name in ("budget_epochs", "data", "eta", "min_rung", "sampler"):
        a, b = getattr(old, name), getattr(new, name)
        if a != b:
            out.append(f"{name}: {a} -> {b}")
    return out


def create_or_resume(
    *,
    study_name: str,
    storage: str | None,
    settings: StudySettings,
    space: SearchSpace,
) -> tuple[optuna.Study, bool]:
    """Create the study with its settings, or resume it when the settings agree.

    Everything has been validated before this is called; the study is created in one storage
    call and its settings written right after, before anything else can see it.
    Returns (study, created).
    """
    url = resolve_storage_url(storage)
    names = study_names(url)
    rdb = open_storage(url)
    if study_name in names:
        study = optuna.load_study(study_name=study_name, storage=rdb)
        if SETTINGS_ATTR not in study.user_attrs:
            raise RsSearchError(
                f"study {study_name!r} exists but was not created by rs-search; "
                "choose another --study name"
            )
        old = load_settings(study)
        diff = differences(old, settings)
        if diff:
            raise RsSearchError(
                f"study {study_name!r} exists with different settings: "
                + "; ".join(diff[:6])
                + ("; ..." if len(diff) > 6 else "")
                + " (use another --study name)"
            )
        if settings.n_trials != old.n_trials:
            merged = replace(old, n_trials=settings.n_trials)
            study.set_user_attr(SETTINGS_ATTR, merged.to_dict())
        return study, False
    try:
        study = optuna.create_study(
            study_name=study_name,
            storage=rdb,
            directions=[StudyDirection[d.upper()] for d in settings.directions],
        )
    except optuna.exceptions.DuplicatedStudyError:
        raise RsSearchError(
            f"study {study_name!r} was just created by someone else; "
            "run the command again to resume it"
        ) from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([_metric_name(o) for o in settings.objectives])
        for key, value in settings.user_attrs().items():
            study.set_user_attr(key, value)
    except BaseException:
        optuna.delete_study(study_name=study_name, storage=rdb)
        raise
    return study, True


def _metric_name(objective: str) -> str:
    return {"accuracy": "val_top1", "latency": "latency_ms", "memory": "memory_mb"}[objective]


def enqueue_work(
    study: optuna.Study, settings: StudySettings, space: SearchSpace
) -> tuple[int, int]:
    """Enqueue the seeds not yet present, then budget slots up to ``settings.n_trials``.

    Returns (seeds enqueued, slots enqueued). Call from one place (``start``), not from every
    worker: ``enqueue_trial(skip_if_exists=True)`` is not atomic across processes.
    """
    trials = study.get_trials(deepcopy=False)
    counts = count_states(study)
    used = counts["finished"] + counts["running"] + counts["waiting"]
    room = None if settings.n_trials is None else max(0, settings.n_trials - used)
    present = {t.user_attrs.get(attrs.SEED_NAME) for t in trials}
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
        start_index = sum(1 for t in trials if attrs.SLOT in t.user_attrs)
        need = settings.n_trials - (counts["finished"] + counts["running"] + waiting)
        for i in range(max(0, need)):
            study.enqueue_trial({}, user_attrs={attrs.SLOT: start_index + i})
            slots += 1
    return seeds, slots
