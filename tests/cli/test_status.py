"""``rs-search status``: the real command against a search in progress on real PostgreSQL.

The workers here are real processes running real ``study.optimize`` with Optuna's heartbeat (the
way ``rs-search worker`` runs trials), claiming trials from the queue of waiting trials that
``rs-search start`` enqueues; their objective reports a curve and then holds until the test
releases it, so every count the status reports can be checked against the study at a moment
when nothing moves. Killing a worker shows the heartbeat going stale.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState

from rs_search.reports.status import STATES, study_status
from rs_search.study.read import StudyInfo
from rs_search.study.settings import StudySettings
from tests.reports.factory import demo_study

optuna.logging.set_verbosity(optuna.logging.WARNING)

ROOT = Path(__file__).resolve().parents[2]
STUDY = "status-live"
GRACE = 3

# A worker: claims one waiting trial through study.optimize (heartbeat every second), writes the
# trial contract's attributes and a two-epoch curve, says so on stdout, then holds the trial
# until the test closes its stdin.
WORKER = r"""
import os, socket, sys
import optuna
from optuna.storages import RDBStorage

url, study_name = sys.argv[1], sys.argv[2]
optuna.logging.set_verbosity(optuna.logging.WARNING)
storage = RDBStorage(url, heartbeat_interval=1, grace_period=3)
study = optuna.load_study(study_name=study_name, storage=storage)

def objective(trial):
    width = 0.25 * (1 + trial.number % 2)
    arch = {"layout": [1, 1, 1, 1], "width": width, "resolution": 32, "num_classes": 10}
    trial.set_user_attr("arch", arch)
    trial.set_user_attr("candidate", {"arch": arch, "recipe": {"epochs": 2}})
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    curve = []
    for epoch in (1, 2):
        curve.append({"epoch": epoch, "train_top1": 40.0 + epoch, "val_top1": 38.0 + epoch,
                      "epoch_seconds": 1.5})
        trial.set_user_attr("curve", curve)
    print(f"running {trial.number} {os.getpid()}", flush=True)
    sys.stdin.readline()  # returns when the test closes the pipe
    return 50.0 + trial.number, 1.0 + width

study.optimize(objective, n_trials=1)
"""


def status_json(storage: str) -> dict[str, Any]:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "rs_search.cli.main",
            "status",
            "--study",
            STUDY,
            "--storage",
            storage,
            "--json",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def real_counts(storage: str) -> dict[str, int]:
    study = optuna.load_study(study_name=STUDY, storage=storage)
    counts = Counter(t.state.name for t in study.get_trials(deepcopy=False))
    return {state: counts.get(state, 0) for state in STATES}


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.2)


def heartbeats(storage: str) -> tuple[datetime, dict[int, datetime]]:
    """The database's clock and the last heartbeat of each RUNNING trial of the study, read from
    Optuna's ``trial_heartbeats`` table (Optuna writes the database's ``now()`` there)."""
    engine = sqlalchemy.create_engine(storage)
    try:
        with engine.connect() as conn:
            now = conn.execute(sqlalchemy.text("SELECT now()::timestamp")).scalar_one()
            rows = conn.execute(
                sqlalchemy.text(
                    "SELECT t.number, h.heartbeat FROM trial_heartbeats h"
                    " JOIN trials t ON t.trial_id = h.trial_id"
                    " JOIN studies s ON s.study_id = t.study_id"
                    " WHERE s.study_name = :study AND t.state = 'RUNNING'"
                ),
                {"study": STUDY},
            ).all()
    finally:
        engine.dispose()
    return now, {int(number): beat for number, beat in rows}


@pytest.fixture
def workers(postgres_url: str) -> Iterator[list[subprocess.Popen[str]]]:
    settings = StudySettings(
        space={},
        space_fingerprint="test",
        budget_epochs=2,
        n_trials=4,
        target={"name": "cpu-fp32-b8"},
        heartbeat_interval=1,
        grace_period=GRACE,
    )
    study = optuna.create_study(
        storage=postgres_url, study_name=STUDY, directions=["maximize", "minimize"]
    )
    for key, value in settings.user_attrs().items():
        study.set_user_attr(key, value)
    for slot in range(4):  # the trial budget as a queue, as rs-search start enqueues it
        study.enqueue_trial({}, user_attrs={"rs_slot": slot})
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, postgres_url, STUDY],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            for stream in (proc.stdin, proc.stderr):
                if stream is not None:
                    stream.close()


@pytest.mark.slow
def test_status_matches_the_study_during_a_search(
    postgres_url: str, workers: list[subprocess.Popen[str]]
) -> None:
    from tests.search.conftest import OutputLines

    procs = workers
    pids: dict[int, int] = {}  # worker pid -> its trial
    for proc in procs:
        assert proc.stdout is not None
        found = OutputLines(proc.stdout).wait_for(r"^running (\d+) (\d+)$", timeout=120)
        pids[int(found[2])] = int(found[1])
    running = sorted(pids.values())
    # Each worker wrote its curve before its line: wait for a heartbeat of each running trial
    # recorded after that (the database's clock on both sides).
    written, _ = heartbeats(postgres_url)

    def beat_since_written() -> bool:
        _, beats = heartbeats(postgres_url)
        return all(number in beats and beats[number] > written for number in running)

    wait_for(beat_since_written, "a heartbeat of both running trials after their curves", 60)

    before = real_counts(postgres_url)
    status = status_json(postgres_url)
    assert status["states"] == before == real_counts(postgres_url)
    assert before == {"RUNNING": 2, "WAITING": 2, "COMPLETE": 0, "PRUNED": 0, "FAIL": 0}
    assert status["total"] == 4 and status["trial_budget"] == 4 and status["finished"] == 0
    assert status["live_workers"] == 2 and status["stale_trials"] == 0
    assert sorted(w["trial"] for w in status["workers"]) == running
    for row in status["workers"]:
        host_pid = row["worker"]
        assert pids[int(host_pid.rsplit(":", 1)[1])] == row["trial"]
        assert row["live"] and 0 <= row["heartbeat_age_s"] <= GRACE
        assert (row["epoch"], row["epochs"], row["val_top1"]) == (2, 2, 40.0)
    assert status["epochs_spent"] == 4 and status["epochs_budget"] == 8
    assert status["device_hours"] == pytest.approx(4 * 1.5 / 3600)
    assert status["front"] == [] and status["eta_s"] is None

    # One trial finishes: its worker leaves (one trial each), the other keeps training.
    done = running[0]
    finished_proc = next(p for p in procs if p.pid == next(k for k, v in pids.items() if v == done))
    assert finished_proc.stdin is not None and finished_proc.stderr is not None
    finished_proc.stdin.close()  # the release
    assert finished_proc.wait(timeout=60) == 0, finished_proc.stderr.read()
    status = status_json(postgres_url)
    assert status["states"] == real_counts(postgres_url)
    assert status["states"] == {"RUNNING": 1, "WAITING": 2, "COMPLETE": 1, "PRUNED": 0, "FAIL": 0}
    assert status["live_workers"] == 1 and status["finished"] == 1
    assert [w["trial"] for w in status["workers"]] == [running[1]]
    assert [f["trial"] for f in status["front"]] == [done]
    assert status["front"][0]["values"] == [50.0 + done, 1.0 + 0.25 * (1 + done % 2)]
    assert status["eta_s"] is not None and status["eta_s"] > 0

    # The other worker dies without a word: its trial stays RUNNING but its heartbeat goes stale.
    survivor = next(p for p in procs if p.poll() is None)
    os.kill(survivor.pid, signal.SIGKILL)
    survivor.wait(timeout=30)

    def stale() -> bool:
        now, beats = heartbeats(postgres_url)
        return (now - beats[running[1]]).total_seconds() > GRACE

    wait_for(stale, f"trial {running[1]}'s heartbeat to be older than {GRACE} s", timeout=60)
    status = status_json(postgres_url)
    assert status["states"] == real_counts(postgres_url)
    assert status["states"]["RUNNING"] == 1
    assert status["live_workers"] == 0 and status["stale_trials"] == 1
    (row,) = status["workers"]
    assert not row["live"] and row["heartbeat_age_s"] > GRACE


def test_status_text_and_unknown_study(postgres_url: str) -> None:
    demo_study(postgres_url, name=STUDY)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "rs_search.cli.main",
            "status",
            "--study",
            STUDY,
            "--storage",
            postgres_url,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"study {STUDY} on cpu-fp32-b8: 9 trials" in out
    assert "1 running" in out and "7 complete" in out and "1 fail" in out
    assert "budget: 7 of 12 trials finished" in out  # a failure without a reason is retried
    assert "compute: 62 of at most 120 epochs" in out
    assert "Pareto front (3 trials)" in out
    assert "ETA:" in out
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "rs_search.cli.main",
            "status",
            "--study",
            "nope",
            "--storage",
            postgres_url,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"error: study 'nope' not found in {postgres_url}; studies there: {STUDY}"
    )


def test_study_status_eta_and_compute_from_records() -> None:
    """The pure step: ETA from the rate trials finished at, compute against the budget."""
    from datetime import timedelta

    from rs_search.study.read import study_records
    from tests.reports.factory import T0

    records = study_records(demo_study())
    info = StudyInfo(
        name="demo",
        target="t",
        budget_epochs=10,
        trial_budget=12,
        objectives=("accuracy", "latency"),
        grace_s=120,
    )
    now = T0 + timedelta(hours=2)
    status = study_status(records, info, heartbeats={8: 5.0}, now=now, finished=8)
    # 8 trials finished in the 2 h since the first started: 4 left take another hour.
    assert status.eta_s == pytest.approx(3600.0)
    assert "8 trials finished" in status.eta_basis
    assert status.epochs_spent == 62 and status.epochs_budget == 120
    assert status.live_workers == 1 and status.workers[0].trial == 8
    assert [f.trial for f in status.front] == [3, 4, 5]
    stale = study_status(records, info, heartbeats={8: 500.0}, now=now)
    assert stale.live_workers == 0 and stale.stale_trials == 1
    spent = study_status(records, info, heartbeats={}, now=now, finished=12)
    assert spent.eta_s == 0.0 and spent.eta_basis == "trial budget spent"
    open_ended = StudyInfo(
        name="d", target="t", budget_epochs=None, trial_budget=None, objectives=()
    )
    assert study_status(records, open_ended, heartbeats={}, now=now).eta_s is None
    assert TrialState.RUNNING.name in STATES


@pytest.mark.slow
def test_status_matches_a_real_search_paused_mid_run(postgres_url: str, tmp_path: Path) -> None:
    """Two real ``rs-search worker`` processes train a micro study; twice, when a worker prints
    the first step of a trial (its progress line, read from the workers' shared stderr pipe),
    both are frozen (SIGSTOP) so nothing moves while ``status`` and Optuna read the study, then
    thawed. Heartbeats every second with a 30 s grace keep a frozen worker live."""
    from tests.search.conftest import OutputLines, cli, cli_env, make_study

    name = "real-live"
    make_study(postgres_url, tmp_path, name, trials=4, budget=2, eta=None, heartbeat=1, grace=30)
    # One pipe for both workers' stderr: a line is one write of under PIPE_BUF bytes, so lines
    # never interleave, and one reader sees whichever worker starts a trial first.
    read_end, write_end = os.pipe()
    procs = [
        subprocess.Popen(
            cli("worker", "--study", name, "--device", "cpu", "--loader-workers", "0"),
            env=cli_env(postgres_url),
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=write_end,
        )
        for _ in range(2)
    ]
    os.close(write_end)
    output = OutputLines(os.fdopen(read_end, encoding="utf-8", errors="replace"))
    pids = {p.pid for p in procs}

    def snapshot() -> tuple[dict[str, int], dict[int, tuple[int, str | None]]]:
        trials = optuna.load_study(study_name=name, storage=postgres_url).get_trials()
        counts = Counter(t.state.name for t in trials)
        # A trial is RUNNING from the moment the sampler hands it out; its worker tags it a
        # moment later, so a snapshot may catch a running trial with no worker yet.
        running = {
            t.number: (len(t.user_attrs.get("curve", [])), t.user_attrs.get("worker"))
            for t in trials
            if t.state == TrialState.RUNNING
        }
        return {s: counts.get(s, 0) for s in STATES}, running

    def status() -> dict[str, Any]:
        result = subprocess.run(
            cli("status", "--study", name, "--storage", postgres_url, "--json"),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            env=cli_env(),
        )
        assert result.returncode == 0, result.stderr
        data: dict[str, Any] = json.loads(result.stdout)
        return data

    checked_running = 0
    try:
        for _ in range(2):
            # A trial's first step: it trains for the rest of its two epochs (16 steps, an
            # evaluation, the curve) while the signals below are delivered.
            output.wait_for(r"^epoch 1/2: step 1/8, ", timeout=600)
            live = [p for p in procs if p.poll() is None]
            for p in live:
                p.send_signal(signal.SIGSTOP)
            try:
                counts, running = snapshot()
                reported = status()
                assert (counts, running) == snapshot()  # nothing moved while status read
            finally:
                for p in live:
                    p.send_signal(signal.SIGCONT)
            assert reported["states"] == counts
            assert reported["total"] == sum(counts.values())
            workers = {w["trial"]: w for w in reported["workers"]}
            assert set(workers) == set(running)
            assert reported["live_workers"] == len(running)
            tagged = True
            for number, row in workers.items():
                epoch, worker = running[number]
                assert row["live"] and row["epoch"] == epoch and row["worker"] == worker
                if worker is None:
                    tagged = False
                else:
                    assert int(worker.rsplit(":", 1)[1]) in pids
            checked_running += counts["RUNNING"] > 0 and tagged
        for p in procs:
            assert p.wait(timeout=600) == 0, output.text()[-2000:]
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.kill()
                p.wait()
    assert checked_running >= 1, "never saw a running trial"

    final = status()
    counts, running = snapshot()
    assert final["states"] == counts and counts["COMPLETE"] == 4 and not running
    assert final["finished"] == 4 and final["trial_budget"] == 4
    assert final["eta_s"] == 0.0 and final["live_workers"] == 0
    trials = optuna.load_study(study_name=name, storage=postgres_url).get_trials()
    assert final["epochs_spent"] == sum(len(t.user_attrs["curve"]) for t in trials) == 8
    assert final["front"], "a finished search has a front"
