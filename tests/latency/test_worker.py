"""Latency workers against the real PostgreSQL server: every architecture measured exactly once
by two concurrent workers; SIGTERM abandons a measurement and releases its claim."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest
from sqlalchemy import create_engine, select

from rs_search.latency.cache import LatencyCache
from rs_search.latency.profiles import get_profile
from rs_search.latency.worker import LatencyWorker, load_study
from rs_search.specs import ArchSpec
from rs_search.storage.tables import latency
from tests.latency.conftest import QUICK_ENV, tiny

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def _archs() -> list[ArchSpec]:
    return [
        tiny(layout=layout, width=width, resolution=res)
        for layout in ((1, 1, 1, 1), (1, 2, 2, 1))
        for width in (0.125, 0.25)
        for res in (16, 32)
    ]


def _study(url: str, archs: list[ArchSpec]) -> None:
    """A study the way the search leaves one: finished, failed and still-waiting trials, each
    carrying its ``arch``; one architecture appears twice; one trial carries none."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="lat", storage=url, directions=["maximize", "minimize"])
    study.set_user_attr("target", get_profile("cpu-fp32-b1-t1").to_dict())
    waiting = []
    for i, arch in enumerate([*archs, archs[0]]):
        attrs = {"arch": arch.to_dict(), "arch_key": arch.key()}
        if i % 3 == 2:
            waiting.append(attrs)
            continue
        trial = study.ask()
        for name, value in attrs.items():
            trial.set_user_attr(name, value)
        if i % 3 == 0:
            study.tell(trial, [0.5, 1.0])
        else:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
    study.tell(study.ask(), [0.1, 0.1])  # a trial without an architecture
    broken = study.ask()
    broken.set_user_attr("arch", {"layout": [1, 1, 1, 1], "width": -1.0})  # skipped, with a word
    study.tell(broken, [0.1, 0.1])
    for attrs in waiting:  # last: ``ask`` would pop a waiting trial
        study.enqueue_trial({}, user_attrs=attrs)
    states = Counter(t.state.name for t in study.get_trials())
    assert states == {"COMPLETE": 5, "FAIL": 3, "WAITING": 3}, states


def _worker(url: str, *extra: str, protocol: str | None = QUICK_ENV) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("RS_SEARCH_LATENCY_PROTOCOL", None)
    if protocol is not None:
        env["RS_SEARCH_LATENCY_PROTOCOL"] = protocol
    cmd = [
        sys.executable,
        "-m",
        "rs_search.cli.main",
        "latency-worker",
        "--study",
        "lat",
        "--storage",
        url,
        *extra,
    ]
    return subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _rows(url: str) -> list[dict[str, object]]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(select(latency))]
    finally:
        engine.dispose()


def test_two_workers_measure_every_architecture_exactly_once(postgres_url: str) -> None:
    archs = _archs()
    _study(postgres_url, archs)
    procs = [_worker(postgres_url, "--once", "--poll", "0.2") for _ in range(2)]
    outputs = []
    for proc in procs:
        out, _ = proc.communicate(timeout=300)
        outputs.append(out)
        assert proc.returncode == 0, out
    assert all(out.count("skipping trial 7: arch.width") == 1 for out in outputs), outputs
    ids = [re.search(r"^latency worker (\S+):", out, re.M).group(1) for out in outputs]  # type: ignore[union-attr]
    assert ids[0] != ids[1]
    measured = {
        wid: re.findall(r"^measuring .* \[([0-9a-f]{16})\] on", out, re.M)
        for wid, out in zip(ids, outputs, strict=True)
    }
    counts = Counter(k for keys in measured.values() for k in keys)
    expected = {a.key() for a in archs}
    assert set(counts) == expected, outputs
    assert all(n == 1 for n in counts.values()), f"measured twice: {counts}"

    rows = _rows(postgres_url)
    assert len(rows) == len(archs) and {r["arch_key"] for r in rows} == expected
    assert all(r["state"] == "done" and r["status"] == "ok" for r in rows)
    for row in rows:  # the claim column names the worker whose output says it measured the row
        assert row["arch_key"] in measured[str(row["claimed_by"])]
    print("\nper worker:", {wid: len(keys) for wid, keys in measured.items()})


def test_sigterm_abandons_the_measurement_and_releases_the_claim(postgres_url: str) -> None:
    """In this process (the handler is the worker's own; a subprocess would add a torch import)."""
    big = ArchSpec(layout=(3, 4, 6, 3), width=1.0, resolution=224, num_classes=10)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="lat", storage=postgres_url)
    study.enqueue_trial({}, user_attrs={"arch": big.to_dict(), "arch_key": big.key()})
    lines: list[str] = []
    states: list[list[object]] = []

    def echo(line: str) -> None:
        lines.append(line)
        if line.startswith("measuring"):  # ResNet-RS-50, 224 px, batch 16: seconds per pass here

            def term() -> None:
                states.append([r["state"] for r in _rows(postgres_url)])
                os.kill(os.getpid(), signal.SIGTERM)

            threading.Timer(1.0, term).start()

    before = signal.getsignal(signal.SIGTERM)
    with LatencyCache(postgres_url) as cache:
        worker = LatencyWorker(
            study=load_study("lat", postgres_url),
            cache=cache,
            profile=get_profile("cpu-fp32-b16"),
            poll_s=0.2,
            echo=echo,
        )
        started = time.monotonic()
        with worker.signals():
            stats = worker.run()
    assert time.monotonic() - started < 60
    assert signal.getsignal(signal.SIGTERM) is before
    assert states == [["claimed"]]  # it was mid-measurement
    assert stats.interrupted and stats.measured == [], lines
    assert any(line.startswith("interrupted: released") for line in lines), lines
    assert _rows(postgres_url) == []  # nothing half-written, and free for another worker
