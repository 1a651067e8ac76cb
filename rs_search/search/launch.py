"""``rs-search start``: validate everything, then create or resume the study and run local workers
(:func:`run_search`, one call with progress callbacks; the CLI only parses and prints).

Validation comes first and has no side effects (issue 5, item 6): the budget, the timeout, the
space file, the data spec against the space (classes), the storage (reachable; the password is
masked in every message), and an existing study's settings. Only then is the study created, its
settings written and its queue filled, so bad input leaves nothing half-created.

Local workers are ``rs-search worker`` subprocesses (one per visible GPU, else one; ``local``).
With ``--workers 0`` the machine trains nothing (a head node): ``start`` creates or resumes the
study, prints the command that joins it from other machines (:func:`worker_command`), and shows
the same progress and closing front while they train, until the trial budget is spent, the
``--timeout`` passes, or Ctrl-C.

Every command printed for a user to paste (:func:`next_commands`, :func:`worker_command`) is
quoted for the shell, and names the storage without its password (:func:`storage_flag`).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rs_search.budget import parse_budget
from rs_search.devices import parse_device, worker_devices
from rs_search.env import Environment
from rs_search.errors import DataError, RsSearchError
from rs_search.search import summary
from rs_search.search.artifacts import CheckpointStore
from rs_search.search.local import LocalWorkers, StopSignals, watch
from rs_search.search.settings import settings_from_space
from rs_search.search.study import create_or_resume
from rs_search.search.summary import Estimate, Progress
from rs_search.space import SearchSpace, load_space
from rs_search.storage.engine import make_engine
from rs_search.storage.url import ENV_STORAGE, mask_url, resolve_storage_url
from rs_search.study.names import check_study_name, folder_name
from rs_search.study.record import TrialRecord
from rs_search.study.settings import SAMPLERS, StudySettings

_DURATION = re.compile(r"^\s*(?:(\d+)\s*h)?\s*(?:(\d+)\s*m)?\s*(?:(\d+)\s*s)?\s*$")


def parse_duration(text: str) -> float:
    """``"90s"``, ``"30m"``, ``"2h"``, ``"1h30m"`` -> seconds; a bare number is an error."""
    match = _DURATION.match(text or "")
    if not text or not text.strip() or match is None or not any(match.groups()):
        raise RsSearchError(
            f"timeout {text!r}: expected a duration with units h, m, s "
            "(for example 90s, 30m, 2h, 1h30m)"
        )
    hours, minutes, seconds = (int(g or 0) for g in match.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if total <= 0:
        raise RsSearchError(f"timeout {text!r}: must be longer than 0 seconds")
    return float(total)


@dataclass(frozen=True, kw_only=True)
class StartPlan:
    """A validated ``start`` request."""

    study_name: str
    storage_url: str  # with the password: only for child processes' environment
    storage_shown: str  # masked
    space: SearchSpace
    settings: StudySettings
    workers: int  # local worker processes; 0: a head node that only creates and watches
    devices: tuple[str, ...]
    timeout_s: float | None
    train_images: int | None
    flops_range: tuple[int, int] | None
    loader_workers: int | None = None
    auto_scale: bool = False  # the workers enqueue a scaling-rule proposal after each trial


# Project limits (not the paper's): a search on one study server stays far below these; they
# stop a typo from queueing 10^8 trials one INSERT at a time or forking thousands of processes.
MAX_TRIALS = 100_000
MAX_LOCAL_WORKERS = 256
MAX_SEED = 2**32 - 1  # numpy's RandomState, behind Optuna's samplers, takes a 32-bit seed


def plan_start(
    *,
    space_file: Path,
    budget: str,
    study_name: str | None,
    storage: str | None,
    data: str,
    trials: int | None,
    timeout: str | None,
    workers: int | None,
    device: str,
    sampler: str,
    eta: int | None,
    min_rung: int | None,
    seed: int | None,
    artifacts: str,
    heartbeat: int,
    grace: int,
    loader_workers: int | None = None,
    auto_scale: bool = False,
) -> StartPlan:
    """Check every input; raise one ``RsSearchError`` for the first problem. Creates nothing."""
    epochs = parse_budget(budget).epochs
    timeout_s = parse_duration(timeout) if timeout is not None else None
    if trials is not None and not 1 <= trials <= MAX_TRIALS:
        raise RsSearchError(f"--trials {trials}: must be between 1 and {MAX_TRIALS}")
    if sampler not in SAMPLERS:
        raise RsSearchError(f"--sampler {sampler!r}; allowed: {', '.join(SAMPLERS)}")
    if eta is not None and eta < 2:
        raise RsSearchError(f"--eta {eta}: must be at least 2 (use --no-halving to turn it off)")
    if min_rung is not None and not 1 <= min_rung < epochs:
        raise RsSearchError(f"--min-rung {min_rung}: must be between 1 and {epochs - 1} epochs")
    if heartbeat < 1 or grace <= heartbeat:
        raise RsSearchError(
            f"--heartbeat {heartbeat} / --grace {grace}: need 1 <= heartbeat < grace"
        )
    if workers is not None and not 0 <= workers <= MAX_LOCAL_WORKERS:
        raise RsSearchError(
            f"--workers {workers}: must be 0 (this machine trains nothing and watches) up to "
            f"{MAX_LOCAL_WORKERS}"
        )
    if loader_workers is not None and loader_workers < 0:
        raise RsSearchError(f"--loader-workers {loader_workers}: must be at least 0")
    if seed is not None and not 0 <= seed <= MAX_SEED - (workers or 1) + 1:
        # worker k samples with seed + k, and Optuna's samplers take a 32-bit seed
        raise RsSearchError(
            f"--seed {seed}: must be between 0 and {MAX_SEED - (workers or 1) + 1} "
            "(worker k uses seed + k, a 32-bit number)"
        )
    CheckpointStore.from_spec(artifacts)
    if study_name is not None:
        check_study_name(study_name)
    space = load_space(space_file)
    name = study_name or check_study_name(
        _default_name(space, space_file, epochs),
        where="the default study name (from the space's name; pass --study NAME)",
    )
    train_images = check_data(data, space)
    flops = _flops_range(space)
    parse_device(device)  # checked even when no local worker uses it
    devices = () if workers == 0 else worker_devices(device, workers)
    url = resolve_storage_url(storage)
    make_engine(url).dispose()  # StorageError with the password masked when unreachable
    artifacts_abs = artifacts if "://" in artifacts else str(Path(artifacts).resolve())
    settings = settings_from_space(
        space,
        budget_epochs=epochs,
        data=data,
        eta=eta,
        min_rung=min_rung,
        n_trials=trials,
        sampler=sampler,
        seed=seed,
        heartbeat_interval=heartbeat,
        grace_period=grace,
        artifacts=artifacts_abs,
    )
    return StartPlan(
        study_name=name,
        storage_url=url.render_as_string(hide_password=False),
        storage_shown=mask_url(url),
        space=space,
        settings=settings,
        workers=len(devices),
        devices=devices,
        timeout_s=timeout_s,
        train_images=train_images,
        flops_range=flops,
        loader_workers=loader_workers,
        auto_scale=auto_scale,
    )


def _default_name(space: SearchSpace, path: Path, epochs: int) -> str:
    return f"{space.name or path.stem}-{epochs}epochs"


def check_data(data: str, space: SearchSpace) -> int | None:
    """Open the data for the space's smallest architectures: a ``DataError`` when its classes (or
    channels) do not match the space. Returns the training-set size when known."""
    from rs_search.specs import RecipeSpec
    from rs_search.train.data import build_data

    small, _ = space.extreme_architectures()
    seen: set[tuple[int, int]] = set()
    size: int | None = None
    for arch in small:
        key = (arch.num_classes, arch.in_channels)
        if key in seen:
            continue
        seen.add(key)
        try:
            source = build_data(data, arch, RecipeSpec(epochs=1, randaug_layers=0))
        except DataError as exc:
            raise DataError(f"{exc} (space {space.source})") from None
        size = source.train_size
    return size


def _flops_range(space: SearchSpace) -> tuple[int, int] | None:
    try:
        from rs_search.models.complexity import count_flops

        small, large = space.extreme_architectures()
        return min(count_flops(a) for a in small), max(count_flops(a) for a in large)
    except Exception:  # an estimate only; never block a start on it
        return None


# -- running -----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class SearchStarted:
    """The study exists and its queue is filled; the workers are about to start."""

    created: bool  # False: an existing study was resumed
    seeds: int  # seeds enqueued now
    slots: int  # budget slots enqueued now
    estimate: Estimate | None  # the compute the rest of the budget will take (None: open-ended)
    spent: bool  # the trial budget is spent: no worker starts
    log_dir: Path  # the local workers' logs (none are written with --workers 0)


@dataclass(frozen=True, kw_only=True)
class SearchProgress:
    progress: Progress
    front: list[TrialRecord]  # most accurate first


@dataclass(frozen=True, kw_only=True)
class SearchOutcome:
    records: list[TrialRecord]
    progress: Progress
    exit_codes: list[int]  # one per local worker
    logs: list[Path]
    stopped: str | None = None  # why a head node (--workers 0) stopped watching early


def budget_spent(progress: Progress) -> bool:
    """Nothing is left for any worker: the trial budget is finished (or nothing is queued) and no
    trial runs. The workers' own rule (``search.worker``), plus "no trial runs", so that a
    watcher shows every trial to its end. An open-ended study is never spent."""
    if progress.total is None or progress.running:
        return False
    finished = progress.complete + progress.pruned + progress.failed
    return finished >= progress.total or progress.waiting == 0


def run_search(
    plan: StartPlan,
    *,
    environment: Environment | None = None,
    on_start: Callable[[SearchStarted], None] = lambda started: None,
    on_progress: Callable[[SearchProgress], None] = lambda progress: None,
) -> SearchOutcome:
    """``rs-search start`` after validation: create or resume the study, fill its queue, run the
    local workers (``plan.workers``) until they exit, reporting progress every few seconds.

    With ``plan.workers == 0`` nothing trains here: the progress is reported while workers on
    other machines train, until the trial budget is spent (:func:`budget_spent`), the plan's
    timeout passes, or SIGTERM/SIGINT (``SearchOutcome.stopped`` says which).

    ``environment``: the settings read at the entry point (the storage retry window here; the
    workers are started with the same ones)."""
    from rs_search.storage.locks import advisory_lock
    from rs_search.study.queue import claim_worker_indexes, enqueue_work
    from rs_search.study.read import study_records

    environment = environment or Environment()
    settings = plan.settings
    # Creating or resuming the study, filling its queue and numbering the workers read, then
    # write: two starts of one study at once (two machines) take turns here.
    with advisory_lock(resolve_storage_url(plan.storage_url), f"start:{plan.study_name}"):
        study, created = create_or_resume(
            study_name=plan.study_name,
            storage=plan.storage_url,
            settings=settings,
            space=plan.space,
            retry_seconds=environment.storage_retry_s,
        )
        seeds, slots = enqueue_work(study, settings, plan.space)
        first_index = claim_worker_indexes(study, len(plan.devices))

    def records() -> list[TrialRecord]:
        return study_records(study, settings.objectives)

    left = summary.progress(records(), settings)
    todo = None
    if settings.n_trials is not None:
        todo = settings.n_trials - (left.complete + left.pruned + left.failed)
    spent = budget_spent(left)
    estimate = None
    if todo is not None:
        estimate = summary.estimate(
            settings,
            trials=max(todo, 0),
            train_images=plan.train_images,
            flops_range=plan.flops_range,
            seeds=left.waiting_seeds,
        )
    log_dir = CheckpointStore.from_spec(settings.artifacts).study_dir(plan.study_name) / "logs"

    def poll() -> bool:
        now = records()
        state = summary.progress(now, settings)
        on_progress(SearchProgress(progress=state, front=summary.front(now, settings)))
        return budget_spent(state)

    with StopSignals() as signals:  # from here on a signal reaches the workers, never orphans
        on_start(
            SearchStarted(
                created=created,
                seeds=seeds,
                slots=slots,
                estimate=estimate,
                spent=spent,
                log_dir=log_dir,
            )
        )
        stopped_early = signals.event.is_set()  # Ctrl-C while the study was announced
        local = LocalWorkers.spawn(
            plan,
            log_dir,
            count=0 if spent or stopped_early else None,
            environ=environment.child_environ(),
            first_index=first_index,
        )
        watched = watch(
            local,
            poll,
            timeout_s=plan.timeout_s if plan.workers == 0 else None,
            signals=signals,
        )
    final = records()
    return SearchOutcome(
        records=final,
        progress=summary.progress(final, settings),
        exit_codes=watched.exit_codes,
        logs=local.logs,
        stopped=watched.stopped,
    )


def storage_flag(plan: StartPlan) -> str:
    """How to name the storage in a printed command, quoted for the shell: the URL (a SQLite
    file by its absolute path, so the command works from any directory) unless it has a
    password, then the environment variable (passwords never reach output)."""
    if "***" in plan.storage_shown:
        return f'"${ENV_STORAGE}"'
    url = resolve_storage_url(plan.storage_url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        return shlex.quote(mask_url(url.set(database=str(Path(url.database).resolve()))))
    return shlex.quote(plan.storage_shown)


def next_commands(plan: StartPlan) -> list[str]:
    """What to do with the study next, as shell command lines."""
    s = storage_flag(plan)
    study = shlex.quote(plan.study_name)
    folder = folder_name(plan.study_name)
    return [
        f"rs-search export --study {study} --storage {s} --out {shlex.quote(f'exports/{folder}')}",
        f"rs-search report --study {study} --storage {s} "
        f"--out {shlex.quote(f'reports/{folder}.html')}",
        f"rs-search dashboard --storage {s}    (or: optuna-dashboard {s})",
    ]


def worker_command(plan: StartPlan) -> str:
    """The command that joins the study from another machine, as a shell command line (with
    ``--auto-scale`` when ``start`` runs the scaling rules, so remote trials feed them too)."""
    rules = " --auto-scale" if plan.auto_scale else ""
    return (
        f"rs-search worker --study {shlex.quote(plan.study_name)}{rules} "
        f"--storage {storage_flag(plan)}"
    )


def worker_notes(plan: StartPlan) -> list[str]:
    """What a user must know before running :func:`worker_command` elsewhere."""
    notes = []
    if "***" in plan.storage_shown:
        notes.append(f"set {ENV_STORAGE} to the database URL (with its password) on that machine")
    if resolve_storage_url(plan.storage_url).get_backend_name() == "sqlite":
        notes.append(
            "the study is in a SQLite file: only workers on this machine reach it; "
            "use PostgreSQL (db/README.md) for workers on other machines"
        )
    if "://" not in plan.settings.artifacts:
        notes.append(
            f"checkpoints go to {plan.settings.artifacts} on each machine: a trial resumes on "
            "another machine only if that folder is shared (or use --artifacts s3://BUCKET)"
        )
    return notes
