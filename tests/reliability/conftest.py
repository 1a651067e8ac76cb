"""The reliability suite (issue 10, item 3): real processes, real faults, checked from outside.

The tests drive the ``rs-search`` command line and real PostgreSQL servers, and judge what a user
or an operator can see: exit statuses, output lines, files on disk and the study as Optuna stores
it (``optuna.load_study``, the ``trial_heartbeats`` table). They do not import the modules being
refactored, so they hold across refactors. Every test says in its docstring how it was seen
failing against a deliberately broken build.

Helpers here: a private PostgreSQL cluster with a password-protected role (never the shared
server, which a restart would take from every other test), finding the processes a test started
by their study name (a worker that ``start`` spawned outlives it when orphaned), and the count of
generated fuzz cases, printed in the terminal summary of every run.
"""

from __future__ import annotations

import os
import signal
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.deploy.pgcluster import Cluster, private_cluster

DATA = Path(__file__).parent / "data"
# tests/search/data/micro.yaml with two seeds (one architecture, 8 steps per epoch); for faults
# inside an epoch the suite uses tests.search.conftest.MICRO_STEPS (128 steps per epoch).
MICRO = DATA / "micro.yaml"

# Generated fuzz cases run in this session, by test; printed by ``pytest_terminal_summary``.
FUZZ_CASES: Counter[str] = Counter()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not FUZZ_CASES:
        return
    parts = ", ".join(f"{name} {count}" for name, count in sorted(FUZZ_CASES.items()))
    terminalreporter.write_line(
        f"reliability fuzz: {sum(FUZZ_CASES.values())} generated cases run ({parts})"
    )


@dataclass(frozen=True)
class PrivateDatabase:
    """A database on a private cluster, owned by a role that logs in with a password."""

    cluster: Cluster
    url: str  # with the password
    password: str


@pytest.fixture
def private_db() -> Iterator[PrivateDatabase]:
    """A private cluster (the test may stop and start it) with role ``rsuser`` and database
    ``rsdb``. The password is random, so a test can look for it in every output."""
    password = f"Pw{uuid.uuid4().hex[:16]}"
    with private_cluster() as cluster:
        cluster.psql(
            "postgres",
            "-c",
            f"CREATE ROLE rsuser LOGIN PASSWORD '{password}'",
            "-c",
            "CREATE DATABASE rsdb OWNER rsuser",
        )
        yield PrivateDatabase(
            cluster=cluster, url=cluster.url("rsuser", password, "rsdb"), password=password
        )


def study_processes(study: str) -> list[int]:
    """Pids of live ``rs-search`` processes (start, worker) whose command line names ``study``
    (a worker that ``start`` spawned is found even after ``start`` died and it was re-parented)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state == "Z":  # exited, waiting for its parent to reap it
            continue
        if b"rs_search.cli.main" in args and study.encode() in args:
            found.append(int(entry.name))
    return found


def kill_study_processes(study: str) -> list[int]:
    """SIGKILL what :func:`study_processes` finds (cleanup after a failed test); their pids."""
    pids = study_processes(study)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return pids


def unique(prefix: str) -> str:
    """A study name no other process on the machine uses (other helpers run tests too)."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"
