"""Where a trial's time goes: the machine's and the PostgreSQL server's CPU, and one worker's
storage calls."""

from __future__ import annotations

import math
import os
import platform
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from orchcost.common import METER, Config, answers_for
from orchcost.study import fresh_database, setup_study
from orchcost.worker import run_optuna, run_rs

# -- CPU accounting ---------------------------------------------------------------------------


def busy_seconds() -> float:
    """CPU seconds the whole machine has been busy (all CPUs; /proc/stat less idle and iowait)."""
    fields = [float(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
    return (sum(fields) - idle) / os.sysconf("SC_CLK_TCK")


def postgres_cpu() -> dict[int, float]:
    """pid -> CPU seconds (user + system) of every process named ``postgres`` on this machine."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, float] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # exited meanwhile
        if text[text.find("(") + 1 : text.rfind(")")].startswith("postgres"):
            rest = text[text.rfind(")") + 2 :].split()
            out[int(stat.parent.name)] = (float(rest[11]) + float(rest[12])) / tick
    return out


class ServerCpu:
    """The PostgreSQL server's CPU seconds since construction, polled: a backend that started
    after it counts from zero, one that exited counts up to its last poll (at most one polling
    interval is lost). The whole local server: other users' sessions are included."""

    def __init__(self) -> None:
        self.base = postgres_cpu()
        self.last = dict(self.base)

    def poll(self) -> None:
        self.last.update(postgres_cpu())

    def total(self) -> float:
        self.poll()
        return sum(max(0.0, cpu - self.base.get(pid, 0.0)) for pid, cpu in self.last.items())


STORAGE_METHODS = (
    "get_all_trials",
    "get_trial",
    "set_trial_user_attr",
    "set_trial_system_attr",
    "set_trial_param",
    "set_trial_state_values",
    "create_new_trial",
    "record_heartbeat",
    "_get_stale_trial_ids",
    "get_study_user_attrs",
    "get_study_system_attrs",
    "get_study_directions",
    "get_study_id_from_name",
)


def storage_calls(engine: str, backend: str, server: str, trials: int) -> dict[str, Any]:
    """One worker, in this process, ``trials`` trials: each storage method the search calls
    (through Optuna's cached storage: what the search sees), how often per trial and the wall
    time in it; the process's CPU and the PostgreSQL server's CPU per trial. What tells where a
    trial's overhead goes. Call it last: it wraps the storage class of this process."""
    from optuna.storages._cached_storage import _CachedStorage

    calls: dict[str, list[float]] = {name: [0, 0.0] for name in STORAGE_METHODS}
    depth = [0]

    def wrap(name: str) -> None:
        method = getattr(_CachedStorage, name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            depth[0] += 1
            began = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                depth[0] -= 1
                if depth[0] == 0:
                    calls[name][0] += 1
                    calls[name][1] += time.perf_counter() - began

        wrapper.__wrapped__ = method  # type: ignore[attr-defined]
        setattr(_CachedStorage, name, wrapper)

    with tempfile.TemporaryDirectory(prefix="rs-orch-calls-") as scratch:
        with fresh_database(backend, server, Path(scratch)) as url:
            config = Config(
                engine=engine,
                backend=backend,
                workers=1,
                trials_per_worker=trials,
                seed=0,
                heartbeat=30,
                url=url,
                workdir=scratch,
            )
            setup_study(config)
            for name in STORAGE_METHODS:
                if hasattr(_CachedStorage, name):
                    wrap(name)
            answers = answers_for(config)
            sql_n, sql_s, sampler_s = METER.snapshot()
            server_cpu = ServerCpu()
            cpu0, wall0 = time.process_time(), time.perf_counter()
            try:
                (run_rs if engine == "rs-search" else run_optuna)(config, 0, answers)
            finally:
                for name in STORAGE_METHODS:
                    if hasattr(_CachedStorage, name):
                        setattr(_CachedStorage, name, getattr(_CachedStorage, name).__wrapped__)
            wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
            served = server_cpu.total() if backend == "postgresql" else math.nan
            end_n, end_s, end_sampler = METER.snapshot()
    return {
        "engine": engine,
        "backend": backend,
        "trials": trials,
        "wall_ms_per_trial": 1000 * wall / trials,
        "client_cpu_ms_per_trial": 1000 * cpu / trials,
        "server_cpu_ms_per_trial": 1000 * served / trials,
        "sql_statements_per_trial": (end_n - sql_n) / trials,
        "sql_ms_per_trial": 1000 * (end_s - sql_s) / trials,
        "sampler_ms_per_trial": 1000 * (end_sampler - sampler_s) / trials,
        "calls": {
            name: {"per_trial": n / trials, "ms_per_trial": 1000 * t / trials}
            for name, (n, t) in sorted(calls.items(), key=lambda kv: -kv[1][1])
            if n
        },
    }


def machine() -> dict[str, Any]:
    from rs_search.latency.profiles import device_name

    try:
        import optuna

        optuna_version = optuna.__version__
    except ImportError:  # pragma: no cover
        optuna_version = "?"
    return {
        "cpu": device_name("cpu"),
        "cores": os.cpu_count(),
        "load_avg_1m_at_start": os.getloadavg()[0],
        "python": platform.python_version(),
        "optuna": optuna_version,
        "when": datetime.now().astimezone().isoformat(timespec="seconds"),
    }
