"""Local worker processes of ``rs-search start``: ``rs-search worker`` subprocesses, one per
device, each with its own log file; SIGTERM/SIGINT to ``start`` are passed on to them.

The storage URL reaches them through ``RS_SEARCH_STORAGE``, never on a command line (``ps`` shows
command lines, and the URL may hold a password); their place among the workers (their sampler
seed) and ``--auto-scale`` are flags.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rs_search.storage.url import ENV_STORAGE

if TYPE_CHECKING:
    from rs_search.search.launch import StartPlan


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
    ) -> LocalWorkers:
        """Start ``count`` workers (default: one per planned device). ``environ``: their
        environment (default: this process's); the storage URL is added to it."""
        if count == 0:
            return cls(procs=[], logs=[])
        log_dir.mkdir(parents=True, exist_ok=True)
        env = {**(os.environ if environ is None else environ), ENV_STORAGE: plan.storage_url}
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
                "--worker-index",  # its sampler seed: the study's seed + k
                str(k),
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
            handle = open(log, "ab")  # noqa: SIM115 - closed when the process is reaped
            procs.append(
                subprocess.Popen(
                    cmd,
                    env=env,
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
