"""Local worker processes of ``rs-search start``: ``rs-search worker`` subprocesses, one per
device, each with its own log file; SIGTERM/SIGINT to ``start`` are passed on to them, and no
error in ``start`` leaves them running orphaned (:func:`watch`).

The storage URL reaches them through ``RS_SEARCH_STORAGE``, never on a command line (``ps`` shows
command lines, and the URL may hold a password); their place among the workers (their sampler
seed) and ``--auto-scale`` are flags.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rs_search.storage.url import ENV_STORAGE

if TYPE_CHECKING:
    from rs_search.search.launch import StartPlan


# How long a worker gets to checkpoint and hand its trial back when ``start`` fails: a SIGTERM
# is acted on at the next training step, but the hand-back may wait out a database blink (the
# storage retry window, 120 s by default).
STOP_GRACE_S = 150.0


@dataclass
class LocalWorkers:
    """K ``rs-search worker`` processes with log files; forwards SIGTERM/SIGINT to them."""

    procs: list[subprocess.Popen[bytes]]
    logs: list[Path]

    @classmethod
    def spawn(
        cls,
        plan: StartPlan,
        log_dir: Path,
        *,
        count: int | None = None,
        environ: Mapping[str, str] | None = None,
        first_index: int = 0,
    ) -> LocalWorkers:
        """Start ``count`` workers (default: one per planned device). ``environ``: their
        environment (default: this process's); the storage URL is added to it. ``first_index``:
        the worker index (sampler seed offset) of the first one, the next ones count up."""
        if count == 0 or not plan.devices:
            return cls(procs=[], logs=[])
        log_dir.mkdir(parents=True, exist_ok=True)
        env = {**(os.environ if environ is None else environ), ENV_STORAGE: plan.storage_url}
        threads = max(1, (os.cpu_count() or 1) // max(1, plan.workers))
        env.setdefault("OMP_NUM_THREADS", str(threads))
        started = cls(procs=[], logs=[])
        try:
            started._start_all(plan, log_dir, env, first_index)
        except BaseException:
            started.stop()  # those already started must not train on, orphaned
            raise
        return started

    def _start_all(
        self, plan: StartPlan, log_dir: Path, env: Mapping[str, str], first_index: int
    ) -> None:
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
                "--worker-index",  # its sampler seed: the study's seed + its index
                str(first_index + k),
            ]
            if plan.auto_scale:
                cmd.append("--auto-scale")
            if plan.timeout_s is not None:
                cmd += ["--timeout", f"{int(plan.timeout_s)}s"]
            loader_workers = plan.loader_workers
            if loader_workers is None:  # this machine's CPUs shared among the workers started here
                import torch

                from rs_search.train.loader import default_workers

                loader_workers = default_workers(torch.device(device), processes=plan.workers)
            cmd += ["--loader-workers", str(loader_workers)]
            with open(log, "ab") as handle:  # the child keeps its own descriptor
                self.procs.append(
                    subprocess.Popen(
                        cmd,
                        env=env,
                        stdout=handle,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
            self.logs.append(log)

    def running(self) -> bool:
        return any(p.poll() is None for p in self.procs)

    def terminate(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)

    def wait(self) -> list[int]:
        return [p.wait() for p in self.procs]

    def stop(self, *, grace_s: float = STOP_GRACE_S) -> list[int]:
        """SIGTERM (each checkpoints and hands its trial back), then SIGKILL for any still running
        after ``grace_s`` (its trial goes stale and is retried); returns the exit statuses."""
        self.terminate()
        deadline = time.monotonic() + grace_s
        for p in self.procs:
            try:
                p.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
        return self.wait()


@dataclass(frozen=True, kw_only=True)
class Watched:
    exit_codes: list[int]  # one per local worker
    stopped: str | None = None  # with no local worker: "SIGINT", "SIGTERM" or "timeout"


class StopSignals:
    """While active (``with``): SIGTERM and SIGINT are remembered and passed on to the attached
    workers (they checkpoint and hand their trials back) instead of ending this process.

    ``start`` enters it before it prints anything or starts a worker, so that a signal at any
    moment (between starting the workers and watching them, say) reaches them rather than
    killing ``start`` and leaving them orphaned."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.received: list[str] = []
        self._workers: LocalWorkers | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handler(self, signum: int, frame: Any) -> None:
        self.received.append(signal.Signals(signum).name)
        self.event.set()
        if self._workers is not None:
            self._workers.terminate()

    def attach(self, workers: LocalWorkers) -> None:
        self._workers = workers
        if self.event.is_set():  # a signal came while they were starting
            workers.terminate()


def watch(
    workers: LocalWorkers,
    poll: Callable[[], bool],
    *,
    every: float = 2.0,
    timeout_s: float | None = None,
    signals: StopSignals | None = None,
) -> Watched:
    """Call ``poll`` every ``every`` seconds, and once more at the end, until the search is over
    for this process.

    With local workers: until they have all exited (they leave when the trial budget is spent, at
    their own timeout, or on a signal); SIGTERM/SIGINT are passed on to them (they checkpoint
    and hand their trials back) and then waited for. Without (``start --workers 0``): until
    ``poll`` returns True (the trial budget is spent), ``timeout_s`` has passed, or SIGTERM/SIGINT.
    ``signals``: the caller's :class:`StopSignals`, already active (default: one for the watch).

    Whatever ``poll`` raises (a database that stays down, a bug), the workers are stopped and
    waited for before the exception propagates: none is left training, orphaned.
    """
    if signals is None:
        with StopSignals() as own:
            return watch(workers, poll, every=every, timeout_s=timeout_s, signals=own)
    signals.attach(workers)
    stop = signals.event
    deadline = None if timeout_s is None else time.monotonic() + timeout_s

    def expired() -> bool:
        return deadline is not None and time.monotonic() >= deadline

    try:
        while True:
            if workers.procs:
                ended = not workers.running()  # decided before the poll, so that it sees the end
                poll()
                if ended:
                    break
                for _ in range(max(1, int(every * 10))):  # wake up soon after the workers exit
                    if not workers.running():
                        break
                    stop.wait(0.1)
            else:
                ended = stop.is_set() or expired()
                if poll() or ended:
                    break
                left = every if deadline is None else min(every, deadline - time.monotonic())
                stop.wait(max(0.0, left))
    except BaseException:
        workers.stop()
        raise
    if workers.procs:
        return Watched(exit_codes=workers.wait())
    stopped = signals.received[0] if signals.received else ("timeout" if expired() else None)
    return Watched(exit_codes=[], stopped=stopped)


def tail(path: Path, lines: int = 5) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return []
