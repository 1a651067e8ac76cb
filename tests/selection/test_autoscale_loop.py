"""The loop closes: a real search started with ``--auto-scale`` runs trials the rules proposed.

``rs-search start`` (real worker processes, real training on synthetic data, real latency
measurement, SQLite) with a three-trial budget: the seed trial runs first; when it completes the
worker's auto-scale hook turns the next empty budget slot into a rule proposal, which runs next;
the search alternates between the sampler and the rules. Tiny settings (16-24 px, width
0.25-0.5, 2 epochs of 8 steps) keep it to about a minute on two cores.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from rs_search.specs import Candidate

SPACE = Path(__file__).parent / "data" / "autoscale.yaml"


@pytest.mark.slow
def test_search_with_auto_scale_completes_rule_trials_with_reasons(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'loop.db'}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("RS_SEARCH_STORAGE", None)
    cmd = [
        sys.executable,
        "-m",
        "rs_search.cli.main",
        "start",
        "--space",
        str(SPACE),
        "--budget",
        "2epochs",
        "--trials",
        "3",
        "--study",
        "loop",
        "--storage",
        storage,
        "--data",
        "synthetic:10",
        "--no-halving",
        "--workers",
        "1",
        "--device",
        "cpu",
        "--sampler",
        "random",
        "--seed",
        "0",
        "--artifacts",
        str(tmp_path / "artifacts"),
        "--auto-scale",
    ]
    done = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    log = "\n".join(p.read_text() for p in (tmp_path / "artifacts").rglob("*.log"))
    assert done.returncode == 0, done.stdout + done.stderr + log

    study = optuna.load_study(study_name="loop", storage=storage)
    trials = study.get_trials()
    assert len(trials) == 3  # the rules used budget slots, they did not add trials
    ruled = [t for t in trials if str(t.user_attrs.get("origin", "")).startswith("rule:")]
    completed = [t for t in ruled if t.state == TrialState.COMPLETE]
    assert completed, [(t.number, t.state.name, t.user_attrs) for t in trials]
    for t in completed:
        reason = t.user_attrs["reason"]
        rule = t.user_attrs["origin"].removeprefix("rule:")
        assert reason.startswith(f"{rule} "), reason  # "depth 1-1-1-1→1-2-2-1: ..." / "width ..."
        source = trials[t.user_attrs["source_trial"]]
        assert source.state == TrialState.COMPLETE and not source.user_attrs.get("origin")
        # the trial ran the candidate the rule proposed, and it differs from its source
        assert t.user_attrs["candidate"] == t.user_attrs["proposal"]
        assert Candidate.from_dict(t.user_attrs["candidate"]) != Candidate.from_dict(
            source.user_attrs["candidate"]
        )
        assert len(t.user_attrs["curve"]) == 2 and t.values is not None
    # sampler (seed) trial first, then a rule trial, then the sampler again: they alternate
    assert not trials[0].user_attrs.get("origin") and trials[1] in ruled
    assert trials[2] not in ruled and trials[2].state == TrialState.COMPLETE
    log_lines = [line for line in log.splitlines() if line.startswith("auto-scale after trial 0")]
    assert log_lines and "rule:" in log_lines[0] and "(slot)" in log_lines[0]
