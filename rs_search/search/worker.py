"""The worker loop: claim a trial, run it through ``study.optimize``, until the budget is spent.

Trials run through ``study.optimize`` (one at a time) because only there does Optuna send
heartbeats (DESIGN.md section 5). Before each trial the worker fails stale trials (a dead worker's
trial; its retry is queued by ``RetryHeartbeatStaleTrialCallback``) and looks at the queue:

- the budget is spent when every slot has finished (complete, pruned, or failed for its own
  reason) -> exit;
- nothing waiting but trials still running elsewhere -> wait and look again: one of them may go
  stale and come back as a retry this worker must run;
- otherwise claim a waiting trial and run it.

SIGTERM (and SIGINT): the engine checkpoints at the next step boundary, the trial is failed with
``interrupted`` and a retry carrying its params and curve is queued in its place (the same
mechanism as a stale trial, without waiting for the grace period), and the worker exits 0.
NaN loss, out-of-memory, data and latency errors fail only that trial (``fail_reason``).
"""

from __future__ import annotations

import gc
import logging
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Any

import optuna

from rs_search.env import Environment
from rs_search.errors import TrialInterrupted
from rs_search.latency.cache import default_worker_id
from rs_search.latency.window import protocol_for
from rs_search.search.artifacts import CheckpointStore
from rs_search.search.deps import CachedLatency, LatencyUnavailable, LocalTrain
from rs_search.search.objective import TRIAL_FAILURES, Objective, TrainLauncher
from rs_search.search.study import join_study
from rs_search.study.queue import QueueEmpty, after_each_trial, fail_stale, hand_back
from rs_search.study.rdb import unmasked
from rs_search.study.read import settings_or_none, study_records
from rs_search.study.record import count_states
from rs_search.study.settings import StudySettings
from rs_search.study.storage import engine_of

_log = logging.getLogger("rs_search.search")


class StopFlag:
    """Set by SIGTERM/SIGINT; the engine polls it between steps (``should_stop``)."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.signal: int | None = None

    def __call__(self) -> bool:
        return self._event.is_set()

    def set(self, signum: int | None = None) -> None:
        self.signal = signum
        self._event.set()

    def wait(self, seconds: float) -> bool:
        return self._event.wait(seconds)

    def install(self) -> None:
        def handler(signum: int, frame: FrameType | None) -> None:
            self.set(signum)

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)


@dataclass(frozen=True, kw_only=True)
class WorkerReport:
    trials_run: int
    interrupted: bool
    reason: str


def run_worker(
    *,
    study_name: str,
    storage: str | None,
    device: str = "auto",
    artifacts: str | None = None,
    timeout_s: float | None = None,
    max_trials: int | None = None,
    echo: Callable[[str], None] = print,
    stop: StopFlag | None = None,
    make_launcher: Callable[[StudySettings], TrainLauncher] | None = None,
    worker_index: int | None = None,
    world_size: int = 1,
    loader_workers: int | None = None,
    auto_scale: bool = False,
    environment: Environment | None = None,
) -> WorkerReport:
    """Join ``study_name`` and run trials until the budget is spent, the timeout passes,
    ``max_trials`` have run here, or SIGTERM arrives. ``auto_scale``: after each sampler trial,
    enqueue a scaling-rule proposal. ``worker_index``: this worker's place among ``start``'s
    local workers (its sampler seed). ``environment``: the ``RS_SEARCH_*`` settings the entry
    point read (heartbeat override, storage retry window, latency protocol and wait); None: the
    defaults."""
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    if stop is None:
        stop = StopFlag()
        stop.install()
    env = environment or Environment()
    study, settings = join_study(
        study_name,
        storage,
        worker_index=worker_index,
        heartbeat=env.heartbeat,
        retry_seconds=env.storage_retry_s,
    )
    store = CheckpointStore.from_spec(artifacts or settings.artifacts)
    launcher = (
        make_launcher(settings)
        if make_launcher is not None
        else LocalTrain(
            data=settings.data, device=device, num_workers=loader_workers, progress=True
        )
    )
    objective = Objective(
        study_name=study_name,
        settings=settings,
        space=settings.search_space(),
        # The latency cache shares the study storage's engine: one pool per process. Figures are
        # taken on this worker's own device, and a wait for one ends when SIGTERM arrives.
        latency=CachedLatency(
            engine_of(study),
            settings.target,
            device=device,
            protocol=protocol_for(env),
            stop=stop,
            wait_s=env.latency_wait_s,
        ),
        launcher=launcher,
        checkpoints=store,
        should_stop=stop,
        on_outcome=lambda o: echo(f"trial {o.number}: {o.summary}"),
        world_size=world_size,
    )
    me = default_worker_id()
    budget = "open-ended" if settings.n_trials is None else f"{settings.n_trials} trials"
    rungs = ",".join(map(str, settings.rungs)) or "none"
    echo(
        f"worker {me} joined study {study_name!r}: {budget}, {settings.budget_epochs} epochs "
        f"per trial, halving rungs at epochs {rungs}"
    )
    callbacks: list[Callable[[optuna.Study, Any], None]] = []
    if auto_scale:  # issue 6: the rules feed the queue
        from rs_search.search.proposals import AutoScale

        callbacks.append(
            after_each_trial(AutoScale(settings=settings, echo=echo), settings.objectives)
        )
    with _frozen_heap():
        return _loop(
            study,
            settings,
            objective,
            poll=_poll_seconds(settings.heartbeat(env.heartbeat)[0]),
            stop=stop,
            timeout_s=timeout_s,
            max_trials=max_trials,
            echo=echo,
            callbacks=callbacks,
        )


@contextmanager
def _frozen_heap() -> Iterator[None]:
    """Keep what the worker built before its first trial (modules, the study, the objective: all
    of it lives as long as the worker) out of the garbage collector's sight while trials run.

    ``study.optimize(gc_after_trial=True)`` runs a full collection after every trial, so that a
    trial's model and optimizer, caught in reference cycles, free their (GPU) memory before the
    next trial. A full collection walks every tracked object: with torch and Optuna imported,
    70-180 ms per trial on the 2-core development machine, about half the orchestration cost of
    a trial (measured by ``benchmarks/orchestration.py``). ``gc.freeze`` moves the objects that
    exist now to a permanent generation, so the collection walks only what trials made and still
    frees it. Unfrozen on the way out: a caller that runs a worker in its own process (a test)
    gets its collector back as it was; a caller that froze its own heap keeps it as it is."""
    if gc.get_freeze_count():
        yield
        return
    gc.collect()  # what is garbage already is freed, not frozen
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _loop(
    study: optuna.Study,
    settings: StudySettings,
    objective: Objective,
    *,
    stop: StopFlag,
    timeout_s: float | None,
    max_trials: int | None,
    echo: Callable[[str], None],
    poll: float,
    callbacks: list[Callable[[optuna.Study, Any], None]] | None = None,
) -> WorkerReport:
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    ran = 0
    catch = (*TRIAL_FAILURES, LatencyUnavailable)
    while True:
        if stop():
            return WorkerReport(trials_run=ran, interrupted=True, reason="stopped by signal")
        if deadline is not None and time.monotonic() >= deadline:
            return WorkerReport(trials_run=ran, interrupted=False, reason="timeout")
        if max_trials is not None and ran >= max_trials:
            return WorkerReport(trials_run=ran, interrupted=False, reason="max trials")
        fail_stale(study)
        budget = _trial_budget(study, settings)
        if budget is not None:
            counts = count_states(study_records(study, settings.objectives))
            if counts["finished"] >= budget:
                return WorkerReport(trials_run=ran, interrupted=False, reason="budget spent")
            if counts["waiting"] == 0:
                if counts["running"] == 0:
                    return WorkerReport(
                        trials_run=ran, interrupted=False, reason="nothing left to run"
                    )
                stop.wait(poll)  # a running trial may still go stale and come back
                continue
        try:
            study.optimize(
                objective, n_trials=1, catch=catch, gc_after_trial=True, callbacks=callbacks
            )
        except QueueEmpty:
            continue
        except UnboundLocalError as exc:  # Optuna's trial loop hiding a storage outage
            raise unmasked(exc) from None
        except TrialInterrupted:
            if objective.current is not None:
                hand_back(study, objective.current)
            echo(f"trial {objective.current}: handed back (a retry is queued); worker exits")
            return WorkerReport(trials_run=ran, interrupted=True, reason="stopped by signal")
        ran += 1


def _poll_seconds(heartbeat_interval: int) -> float:
    """How often an idle worker looks at the queue again: about a heartbeat, 1..10 s."""
    return max(1.0, min(float(heartbeat_interval), 10.0))


def _trial_budget(study: optuna.Study, settings: StudySettings) -> int | None:
    """The study's trial budget as stored now (``start --trials`` may have raised it)."""
    stored = settings_or_none(study)
    return (stored or settings).n_trials
