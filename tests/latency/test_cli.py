"""``rs-search latency`` and ``latency-worker`` on the command line (in this process)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import optuna
import pytest

from rs_search.cli.main import main
from rs_search.latency.profiles import BUILTIN_PROFILES, HardwareProfile
from tests.latency.conftest import QUICK_ENV

SPACE = """
name: latency-cli-test
architecture:
  depth: [[1, 1, 1, 1], [2, 2, 2, 2]]
  width: [0.125, 0.25]
  resolution: [16, 32]
  num_classes: 10
recipe:
  batch_size: 8
objectives:
  accuracy: maximize
  latency: minimize
target:
  name: edge-b2
  device: cpu
  batch_size: 2
  threads: 1
"""

CANDIDATE = """
arch: {depth: [1, 1, 1, 1], width: 0.25, resolution: 32, num_classes: 10}
recipe: {batch_size: 8}
"""


@pytest.fixture(autouse=True)
def _quick(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A quick protocol for the CLI (read once from the environment at its entry point), and a
    working directory of the test's own: the default storage is ./rs-search.db."""
    monkeypatch.setenv("RS_SEARCH_LATENCY_PROTOCOL", QUICK_ENV)
    monkeypatch.delenv("RS_SEARCH_STORAGE", raising=False)
    monkeypatch.chdir(tmp_path)


def _run(args: list[str]) -> int:
    with pytest.raises(SystemExit) as info:
        main(args)
        raise SystemExit(0)
    return int(info.value.code or 0)


def test_unknown_profile_exits_2_listing_the_known_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(CANDIDATE)
    assert _run(["latency", "--config", str(config), "--hardware", "tpu-v9"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown hardware profile 'tpu-v9'; known profiles:")
    assert all(name in err for name in BUILTIN_PROFILES) and "Traceback" not in err


def test_worker_unknown_profile_lists_the_studys_own_target(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="s", storage=url)
    study.set_user_attr("target", HardwareProfile(name="edge-b2", batch_size=2).to_dict())
    assert _run(["latency-worker", "--study", "s", "--storage", url, "--hardware", "nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown hardware profile 'nope'" in err and "edge-b2" in err and "cpu-fp32-b1" in err
    assert _run(["latency-worker", "--study", "missing", "--storage", url]) == 2
    assert "study 'missing' not found" in capsys.readouterr().err
    # the study's target is the default profile; nothing to measure in an empty study
    assert _run(["latency-worker", "--study", "s", "--storage", url, "--once"]) == 0
    out = capsys.readouterr().out
    assert "edge-b2 (cpu, fp32, batch 2" in out and "done: all 0 architectures" in out


def test_config_prints_figures_and_uses_the_cache(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(CANDIDATE)
    url = f"sqlite:///{tmp_path / 'cache.db'}"
    args = ["latency", "--config", str(config), "--hardware", "cpu-fp32-b1-t1", "--storage", url]
    assert _run(args) == 0
    out = capsys.readouterr().out
    assert "AMD" in out or "CPUs)" in out  # the device's real name
    for label in ("latency", "spread", "stable", "contention", "peak memory"):
        assert f"\n{label} " in out, out
    assert "ms per batch of 1 (median), p90" in out
    assert "measured, stored in the cache" in out
    assert _run([*args, "--json"]) == 0
    cached = json.loads(capsys.readouterr().out)
    assert cached["status"] == "ok" and cached["profile_name"] == "cpu-fp32-b1-t1"
    assert _run(args) == 0
    assert re.search(r"^source +cache, measured at", capsys.readouterr().out, re.M)


def test_space_sample_prints_table_and_rank_correlation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    url = f"sqlite:///{tmp_path / 'cache.db'}"
    args = ["latency", "--space", str(space), "--seed", "3", "--storage", url]
    assert _run([*args, "--sample", "4"]) == 0
    captured = capsys.readouterr()
    assert "edge-b2 (cpu, fp32, batch 2" in captured.out  # the space's target by default
    pattern = r"Spearman rank correlation over 4 measured: FLOPs vs latency -?[01]\.\d{3}"
    assert re.search(pattern, captured.out), captured.out
    rows = re.findall(r"^\s*\d-\d-\d-\d w0\.\d+ r\d+ ", captured.out, re.M)
    assert len(rows) == 4, captured.out
    assert captured.err.count("] ") >= 4  # progress per architecture on stderr
    assert _run([*args, "--sample", "4", "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    # the same seed samples the same architectures first: answered from the cache, unchanged
    assert _run([*args, "--sample", "3", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data["results"]) == 3 and -1 <= data["spearman_flops_latency"] <= 1
    assert data["results"] == first["results"][:3]


def test_without_storage_the_default_database_caches(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No --storage and no $RS_SEARCH_STORAGE: the figure goes to ./rs-search.db, as every
    command resolves the storage, and the second run answers from it."""
    config = tmp_path / "c.yaml"
    config.write_text(CANDIDATE)
    args = ["latency", "--config", str(config), "--hardware", "cpu-fp32-b1-t1"]
    assert _run(args) == 0
    assert "measured, stored in the cache" in capsys.readouterr().out
    assert (tmp_path / "rs-search.db").is_file()
    assert _run(args) == 0
    assert re.search(r"^source +cache, measured at", capsys.readouterr().out, re.M)


def test_a_training_step_profile_prints_a_training_step_figure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(CANDIDATE)
    assert _run(["latency", "--config", str(config), "--hardware", "cpu-fp32-train-b16"]) == 0
    captured = capsys.readouterr()
    assert "training step at batch 16 (halved until it fits)" in captured.out
    assert re.search(
        r"^latency +\d+\.\d{3} ms per training step of 16 images \(forward, backward, SGD step\)",
        captured.out,
        re.M,
    ), captured.out
    assert re.search(r"^peak memory +\d+\.\d MB \(training step\)", captured.out, re.M)


def test_a_bad_protocol_variable_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(CANDIDATE)
    monkeypatch.setenv("RS_SEARCH_LATENCY_PROTOCOL", "rep_s=fast")
    assert _run(["latency", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err == "error: $RS_SEARCH_LATENCY_PROTOCOL: rep_s='fast' is not a number\n"
    assert not (tmp_path / "rs-search.db").exists()


def test_worker_refuses_a_missing_sqlite_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A latency worker joins an existing study: a mistyped SQLite path is one line, and no
    empty database file is left behind."""
    missing = tmp_path / "typo.db"
    assert _run(["latency-worker", "--study", "s", "--storage", f"sqlite:///{missing}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: study 's' not found in sqlite:///") and err.count("\n") == 1
    assert "rs-search start" in err and "Traceback" not in err
    assert not missing.exists()


def test_bad_flag_combinations(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["latency"]) == 2
    assert "exactly one of --config" in capsys.readouterr().err
    config = tmp_path / "c.yaml"
    config.write_text(CANDIDATE)
    assert _run(["latency", "--config", str(config), "--sample", "3"]) == 2


@pytest.mark.slow
def test_sigterm_releases_the_claim_of_a_measurement(tmp_path: Path) -> None:
    """``rs-search latency`` stopped by SIGTERM mid-measurement exits 130 and leaves no claim
    behind (another process would otherwise wait for it to go stale, 10 minutes)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from sqlalchemy import create_engine, select

    from rs_search.storage.tables import latency

    config = tmp_path / "rs50.yaml"
    config.write_text("arch: {depth: 50, resolution: 224}\nrecipe: {batch_size: 16}\n")
    url = f"sqlite:///{tmp_path / 'cache.db'}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "RS_SEARCH_LATENCY_PROTOCOL": QUICK_ENV}
    cmd = [sys.executable, "-m", "rs_search.cli.main", "latency", "--config", str(config)]
    proc = subprocess.Popen(
        [*cmd, "--hardware", "cpu-fp32-b16", "--storage", url],
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stderr is not None
    assert proc.stderr.readline().startswith("measuring 50 w1 r224")
    engine = create_engine(url)
    try:
        deadline = time.monotonic() + 60
        states: list[str] = []
        while not states and time.monotonic() < deadline:  # the claim follows the line at once
            with engine.connect() as conn:
                states = [r[0] for r in conn.execute(select(latency.c.state))]
        assert states == ["claimed"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 130
        assert "interrupted" in proc.stderr.read()
        with engine.connect() as conn:
            assert conn.execute(select(latency.c.state)).all() == []
    finally:
        engine.dispose()
        if proc.poll() is None:
            proc.kill()
