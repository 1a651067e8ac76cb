"""The loop closes: a real search (``rs-search start``, the scaling rules on by default) runs
trials the rules proposed, and its closing summary says what each proposed, why, and how it did.

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
    ]  # no --auto-scale: it is the default
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

    # the closing summary: what the rule proposed, why, how it did against its source
    out = done.stdout
    rule_trial = trials[1]
    step = rule_trial.user_attrs["reason"].split(":")[0]
    assert f"scaling rules: {len(ruled)} proposal(s) ran (--no-auto-scale turns them off)" in out
    top1, base = rule_trial.values[0], trials[0].values[0]
    assert (
        f"trial 1 {rule_trial.user_attrs['origin']} from trial 0: {step} -> top-1 {top1:.2f}% "
        f"({top1 - base:+.2f} vs trial 0's {base:.2f}%), latency "
    ) in out
    (why,) = [line.strip() for line in out.splitlines() if line.strip().startswith("why: ")]
    assert "epochs on 1024 training images" in why  # the regime: epochs and data size
    assert "[" not in why  # the citations are printed once, apart
    assert '[paper (abstract; Sec. 7.2, Fig. 6): "scale model depth in regimes where' in out
    assert "project heuristics: overfitting = over the last 25% of epochs" in out
