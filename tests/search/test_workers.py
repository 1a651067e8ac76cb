"""Four worker processes run one study to 40 trials against the real PostgreSQL; the study stays
a plain Optuna study (issue 5, "What it must show")."""

from __future__ import annotations

import json
from collections import Counter

import optuna
import pytest
from optuna.trial import TrialState

from tests.search.conftest import MICRO, cli_env, run_cli

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def test_four_workers_forty_trials(postgres_url, tmp_path):
    proc = run_cli(
        "start",
        "--no-auto-scale",  # the rules are not what this tests
        "--space",
        str(MICRO),
        "--budget",
        "1epochs",
        "--trials",
        "40",
        "--workers",
        "4",
        "--device",
        "cpu",
        "--data",
        "synthetic:10",
        "--study",
        "forty",
        "--artifacts",
        str(tmp_path / "art"),
        "--seed",
        "0",
        "--loader-workers",
        "0",
        env=cli_env(postgres_url),
        cwd=tmp_path,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Pareto front of forty" in proc.stdout
    assert "rs-search export --study forty" in proc.stdout
    assert "optuna-dashboard" in proc.stdout
    # progress: not a terminal, so plain lines on stderr (no bar's control characters), the last
    # one with every trial done
    assert "search forty: 40/40 trials (100%) complete=40" in proc.stderr
    assert "\r" not in proc.stderr and "\x1b" not in proc.stderr

    # A plain Optuna client reads the study unchanged (this is what optuna-dashboard does).
    study = optuna.load_study(study_name="forty", storage=postgres_url)
    trials = study.get_trials()
    numbers = [t.number for t in trials]
    assert len(trials) == 40, Counter(t.state.name for t in trials)
    assert sorted(numbers) == list(range(40)) and len(set(numbers)) == 40
    assert all(t.state == TrialState.COMPLETE for t in trials)
    # every trial ran exactly once: one curve of one epoch each, no retries
    assert all(len(t.user_attrs["curve"]) == 1 for t in trials)
    assert not any("failed_trial" in t.system_attrs for t in trials)
    workers = Counter(t.user_attrs["worker"] for t in trials)
    assert len(workers) == 4, workers  # all four processes took trials
    # the objective values are the curve's last top-1 and the measured latency
    for t in trials:
        assert t.values[0] == pytest.approx(t.user_attrs["curve"][-1]["val_top1"])
        assert t.values[1] == pytest.approx(t.user_attrs["latency_ms"]) and t.values[1] > 0
        assert t.user_attrs["arch_key"] and t.user_attrs["arch"]["layout"] == [1, 1, 1, 1]
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert study.metric_names == ["val_top1", "latency_ms"]
    assert study.best_trials  # Optuna's own Pareto front
    assert study.user_attrs["target"]["name"] == "cpu-fp32-b1"
    assert study.user_attrs["budget"] == "1epochs"
    json.dumps(study.user_attrs)  # plain JSON, readable by any client
