"""Create, resume and join a study; its sampler.

The queue of waiting trials the workers claim, and the seeds and budget slots ``start`` puts in
it, are the study layer's (``rs_search.study.queue``).
"""

from __future__ import annotations

import warnings
from dataclasses import replace

import optuna
from optuna.study import StudyDirection

from rs_search.errors import RsSearchError
from rs_search.space import SearchSpace
from rs_search.storage.url import resolve_storage_url
from rs_search.study.queue import QueuedStudy
from rs_search.study.read import settings_of
from rs_search.study.settings import SETTINGS_ATTR, StudySettings
from rs_search.study.storage import (
    Heartbeat,
    open_storage,
    open_study,
    require_study,
    stored_study_attrs,
    study_names,
)


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


def join_study(
    study_name: str,
    storage: str | None,
    *,
    queued: bool = True,
    worker_index: int | None = None,
    heartbeat: tuple[int, int] | None = None,
    retry_seconds: float | None = None,
) -> tuple[optuna.Study, StudySettings]:
    """Open an existing rs-search study with the process's one storage, its heartbeat set at
    construction: the study's, or ``heartbeat`` (interval, grace) when this process overrides it.
    ``worker_index``: this worker's place among ``start``'s local workers (its sampler seed).

    Unknown study: an ``RsSearchError`` listing the studies there; nothing is created.
    """
    url = require_study(study_name, storage)
    settings = StudySettings.from_study_attrs(
        stored_study_attrs(study_name, url, retry_seconds=retry_seconds), study_name=study_name
    )
    interval, grace = settings.heartbeat(heartbeat)
    opened = open_study(
        study_name,
        url,
        heartbeat=Heartbeat(interval=interval, grace=grace, max_retry=settings.max_retry),
        retry_seconds=retry_seconds,
        study_class=QueuedStudy if (queued and settings.n_trials is not None) else optuna.Study,
        sampler=make_sampler(settings, seed=worker_seed(settings, worker_index)),
    )
    return opened.study, settings


def worker_seed(settings: StudySettings, worker_index: int | None) -> int | None:
    """The sampler seed of a worker: ``start --seed S`` gives its k-th local worker S + k
    (distinct streams, so parallel workers do not sample the same candidates); a worker that
    joined from elsewhere samples unseeded."""
    if settings.seed is None or worker_index is None:
        return None
    return (settings.seed + worker_index) % 2**32  # the samplers take a 32-bit seed


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
    retry_seconds: float | None = None,
) -> tuple[optuna.Study, bool]:
    """Create the study with its settings, or resume it when the settings agree.

    Everything has been validated before this is called; the study is created in one storage
    call and its settings written right after, before anything else can see it.
    Returns (study, created).
    """
    url = resolve_storage_url(storage)
    names = study_names(url)
    rdb = open_storage(url, retry_seconds=retry_seconds)
    if study_name in names:
        study = optuna.load_study(study_name=study_name, storage=rdb)
        if SETTINGS_ATTR not in study.user_attrs:
            raise RsSearchError(
                f"study {study_name!r} exists but was not created by rs-search; "
                "choose another --study name"
            )
        old = settings_of(study)
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
