"""``rs-search start``: validate everything, create or resume the study, run local workers.

Validation comes first and has no side effects (issue 5, item 6): the budget, the timeout, the
space file, the data spec against the space (classes), the storage (reachable; the password is
masked in every message), and an existing study's settings. Only then is the study created, its
settings written and its queue filled, so bad input leaves nothing half-created.

Local workers are ``rs-search worker`` subprocesses (one per visible GPU, else one), each with its
own log file under the artifact directory; the storage URL reaches them through
``RS_SEARCH_STORAGE``, never on a command line.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rs_search.budget import parse_budget
from rs_search.devices import worker_devices
from rs_search.errors import DataError, RsSearchError
from rs_search.search.artifacts import CheckpointStore
from rs_search.search.settings import SAMPLERS, StudySettings, settings_from_space
from rs_search.search.study import ENV_WORKER_INDEX
from rs_search.space import SearchSpace, load_space
from rs_search.storage.engine import make_engine
from rs_search.storage.url import ENV_STORAGE, mask_url, resolve_storage_url

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
    workers: int
    devices: tuple[str, ...]
    timeout_s: float | None
    train_images: int | None
    flops_range: tuple[int, int] | None
    loader_workers: int | None = None


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
) -> StartPlan:
    """Check every input; raise one ``RsSearchError`` for the first problem. Creates nothing."""
    epochs = parse_budget(budget).epochs
    timeout_s = parse_duration(timeout) if timeout is not None else None
    if trials is not None and trials < 1:
        raise RsSearchError(f"--trials {trials}: must be at least 1")
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
    CheckpointStore.from_spec(artifacts)
    space = load_space(space_file)
    train_images = check_data(data, space)
    flops = _flops_range(space)
    devices = worker_devices(device, workers)
    url = resolve_storage_url(storage)
    make_engine(url).dispose()  # StorageError with the password masked when unreachable
    name = study_name or _default_name(space, space_file, epochs)
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


@dataclass
class LocalWorkers:
    """K ``rs-search worker`` processes with log files; forwards SIGTERM/SIGINT to them."""

    procs: list[subprocess.Popen[bytes]]
    logs: list[Path]

    @classmethod
    def spawn(cls, plan: StartPlan, log_dir: Path, *, count: int | None = None) -> LocalWorkers:
        """Start ``count`` workers (default: one per planned device)."""
        if count == 0:
            return cls(procs=[], logs=[])
        log_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, ENV_STORAGE: plan.storage_url}
        threads = max(1, (os.cpu_count() or 1) // max(1, plan.workers))
        env.setdefault("OMP_NUM_THREADS", str(threads))
        procs, logs = [], []
        for k, device in enumerate(plan.devices):
            log = log_dir / f"worker-{k}.log"
            cmd = [
                sys.executable,
                "-m",
                "rs_search.cli.main",
                "worker",
                "--study",
                plan.study_name,
                "--device",
                device,
            ]
            if plan.timeout_s is not None:
                cmd += ["--timeout", f"{int(plan.timeout_s)}s"]
            loader_workers = plan.loader_workers
            if loader_workers is None:  # this machine's CPUs shared among the workers started here
                import torch

                from rs_search.train.loader import default_workers

                loader_workers = default_workers(torch.device(device), processes=plan.workers)
            cmd += ["--loader-workers", str(loader_workers)]
            handle = open(log, "ab")  # noqa: SIM115 - closed when the process is reaped
            procs.append(
                subprocess.Popen(
                    cmd,
                    env={**env, ENV_WORKER_INDEX: str(k)},
                    stdout=handle,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
            handle.close()
            logs.append(log)
        return cls(procs=procs, logs=logs)

    def running(self) -> bool:
        return any(p.poll() is None for p in self.procs)

    def terminate(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)

    def wait(self) -> list[int]:
        return [p.wait() for p in self.procs]


def watch(workers: LocalWorkers, poll: Callable[[], Any], *, every: float = 2.0) -> list[int]:
    """Call ``poll`` every ``every`` seconds until the workers exit; SIGTERM/SIGINT are passed on
    to them (they checkpoint and hand their trials back) and then waited for."""
    stopping = {"yes": False}

    def handler(signum: int, frame: Any) -> None:
        stopping["yes"] = True
        workers.terminate()

    old_term = signal.signal(signal.SIGTERM, handler)
    old_int = signal.signal(signal.SIGINT, handler)
    try:
        while workers.running():
            poll()
            for _ in range(int(every * 10)):
                if not workers.running():
                    break
                time.sleep(0.1)
        poll()
        return workers.wait()
    finally:
        signal.signal(signal.SIGTERM, old_term)
        signal.signal(signal.SIGINT, old_int)


def tail(path: Path, lines: int = 5) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return []


def storage_flag(plan: StartPlan) -> str:
    """How to name the storage in a printed command: the URL (a SQLite file by its absolute
    path, so the command works from any directory) unless it has a password, then the
    environment variable (passwords never reach output)."""
    if "***" in plan.storage_shown:
        return f'"${ENV_STORAGE}"'
    url = resolve_storage_url(plan.storage_url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        return mask_url(url.set(database=str(Path(url.database).resolve())))
    return plan.storage_shown


def next_commands(plan: StartPlan) -> list[str]:
    s = storage_flag(plan)
    return [
        f"rs-search export --study {plan.study_name} --storage {s} --out exports/{plan.study_name}",
        f"rs-search report --study {plan.study_name} --storage {s} "
        f"--out reports/{plan.study_name}.html",
        f"rs-search dashboard --storage {s}    (or: optuna-dashboard {s})",
    ]
