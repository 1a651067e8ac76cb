"""``start --workers 0``: a head node that trains nothing (issue 10, item 2). It creates the study,
prints the command that joins it from other machines, and shows the progress and the closing
front while a real ``rs-search worker`` (another process, here as it would run on another
machine: its own folder, the storage from its own environment) trains on real PostgreSQL.

Seen failing before the fix: ``start --workers 0`` exited 2 with ``--workers 0: must be at least
1`` and created nothing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from optuna.trial import TrialState

from rs_search.study.storage import study_names
from tests.search.conftest import MICRO, OutputLines, cli, cli_env, load

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

JOIN = r"^  (rs-search worker .*)$"


def _head(*args: str, storage: str, cwd: Path) -> tuple[subprocess.Popen[str], OutputLines]:
    cwd.mkdir(exist_ok=True)
    head = subprocess.Popen(
        cli(
            "start",
            "--no-auto-scale",  # the rules are not what this tests
            "--space",
            str(MICRO),
            "--budget",
            "1epochs",
            "--data",
            "synthetic:10",
            "--sampler",
            "random",
            "--workers",
            "0",
            *args,
        ),
        env=cli_env(storage, RS_SEARCH_PROGRESS="plain"),
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert head.stdout is not None
    return head, OutputLines(head.stdout)


def test_a_head_node_watches_remote_workers_to_the_end(postgres_url: str, tmp_path: Path) -> None:
    # The test server trusts its clients: a URL with a password connects, and must not be shown.
    storage = postgres_url.replace("postgres@", "postgres:hunter2@", 1)
    assert ":hunter2@" in storage
    head, output = _head(
        "--study", "head", "--trials", "2", "--seed", "0", storage=storage, cwd=tmp_path / "head"
    )
    remote = None
    try:
        command = output.wait_for(JOIN, timeout=180).group(1)
        assert command == 'rs-search worker --study head --storage "$RS_SEARCH_STORAGE"'
        # What a user pastes on the other machine, run by the shell there.
        (tmp_path / "remote").mkdir()
        remote = subprocess.run(
            ["bash", "-c", f"{command} --device cpu --loader-workers 0"],
            env=cli_env(
                storage, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
            ),
            cwd=tmp_path / "remote",
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert head.wait(timeout=120) == 0, output.text()
        out = output.all(timeout=30)
    finally:
        if head.poll() is None:
            head.kill()
            head.wait()
    assert remote.returncode == 0, remote.stdout + remote.stderr
    assert "budget spent" in remote.stdout
    print(out)
    assert "study head created" in out and "no local worker (--workers 0)" in out
    assert "search head: 2/2 trials (100%)" in out  # the same progress line as with workers
    assert "Pareto front of head" in out and "2/2 done: 2 complete" in out
    assert "hunter2" not in out
    assert "stopped watching" not in out  # it left because the budget was spent
    trials = load("head", postgres_url).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    # trained by the remote worker only: the head started no worker, so no worker log; the
    # checkpoints went to the study's folder (the head's, absolute: this "remote" shares a disk)
    assert all(not t.user_attrs["worker"].endswith(f":{head.pid}") for t in trials)
    study_folder = tmp_path / "head" / "rs-search-artifacts" / "head"
    assert sorted(p.name for p in study_folder.iterdir()) == ["trial-0", "trial-1"]


@pytest.mark.parametrize("how", ["SIGINT", "timeout"])
def test_a_head_node_stops_watching_on_ctrl_c_or_timeout(
    how: str, postgres_url: str, tmp_path: Path
) -> None:
    """Open-ended (no --trials): only Ctrl-C or the --timeout ends the watch. The study stays,
    ready for the workers."""
    extra = ("--timeout", "2s") if how == "timeout" else ()
    head, output = _head("--study", "open", *extra, storage=postgres_url, cwd=tmp_path)
    try:
        command = output.wait_for(JOIN, timeout=180).group(1)
        assert command == f"rs-search worker --study open --storage {postgres_url}"
        if how == "SIGINT":
            output.wait_for(r"^search open: 0 trials", timeout=60)  # the watch has begun
            head.send_signal(signal.SIGINT)
        assert head.wait(timeout=60) == 0, output.text()
    finally:
        if head.poll() is None:
            head.kill()
            head.wait()
    out = output.all(timeout=30)
    assert f"stopped watching ({how}); the workers on other machines go on" in out
    assert "next:" in out and "Traceback" not in out
    assert study_names(postgres_url) == ["open"]
    assert list(tmp_path.iterdir()) == []  # no worker log, no checkpoint folder
