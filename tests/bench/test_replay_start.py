"""Replaying one seed on a table made from a real ``rs-search start`` gives that start's
candidates and rung decisions (issue 11, "What it must show").

A real search (``rs-search start``: one local worker, ``--seed``, halving, ``--auto-scale``) on a
small synthetic space; then a table is built from that study's own trials (their candidates,
per-epoch curves and latencies) and the search is replayed on it with the same settings and
sampler seed. The replay must propose the same candidate in every trial, take the same decision
at every rung, train the same epochs, end each trial the same way (pruned, complete, a repeat)
and queue the same rule proposals. A pruned trial's curve stops where it was pruned; the table
needs a full curve, so the last epoch is repeated to the budget, and the replay must never read
those epochs (its trials train exactly as many epochs as the real ones).
"""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from rs_search.bench.replay import Method, replay
from rs_search.bench.table import Curve, Entry, Latency, Table, TrainInfo
from rs_search.models.complexity import complexity
from rs_search.space import SearchSpace, load_space
from rs_search.study.read import settings_of, study_records
from rs_search.study.record import TrialRecord
from tests.bench.helpers import DATA, header
from tests.search.conftest import cli_env, run_cli

pytestmark = pytest.mark.slow  # a real search trains ~10 tiny trials

SPACE = DATA / "replay-start.yaml"
SEED, TRIALS, BUDGET = 5, 10, 6


def table_from_study(records: list[TrialRecord], space: SearchSpace) -> Table:
    """Every trial that trained (its candidate, curve padded to the budget, latency)."""
    entries: dict[str, Entry] = {}
    for r in records:
        if r.candidate is None or not r.curve or r.measured.latency_ms is None:
            continue
        rows = list(r.curve) + [r.curve[-1]] * (BUDGET - len(r.curve))
        size = complexity(r.candidate.arch)
        entries.setdefault(
            space.normalise(r.candidate).key(),
            Entry(
                candidate=r.candidate,
                status="done",
                params=size.params,
                flops=size.flops,
                latency=Latency(
                    median_ms=r.measured.latency_ms,
                    p90_ms=r.measured.latency_p90_ms or r.measured.latency_ms,
                    spread=None,
                    memory_mb=r.measured.memory_mb,
                    stable=True,
                ),
                curve=Curve.from_rows(rows),
                train=TrainInfo(
                    seed=r.number, seconds=0.0, resumed_from_epoch=None, finished_at=""
                ),
            ),
        )
    return Table(
        header=header(space, budget=BUDGET, n=len(entries)), entries=tuple(entries.values())
    )


def test_a_replay_makes_the_real_starts_choices_and_decisions(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    proc = run_cli(
        "start", "--space", str(SPACE), "--budget", f"{BUDGET}epochs", "--trials", str(TRIALS),
        "--data", "synthetic:10", "--workers", "1", "--device", "cpu", "--seed", str(SEED),
        "--study", "real", "--storage", storage, "--auto-scale",
        "--artifacts", str(tmp_path / "art"), "--loader-workers", "0",
        env=cli_env(), cwd=tmp_path, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    study = optuna.load_study(study_name="real", storage=storage)
    settings = settings_of(study)
    real = study_records(study, settings.objectives)
    assert settings.rungs == (1, 2) and settings.seed == SEED
    space = load_space(SPACE)
    table = table_from_study(real, space)

    run = replay(
        table,
        Method(name="start", sampler=settings.sampler, eta=3, auto_scale=True),
        seed=SEED,
        trials=TRIALS,
    )
    replayed = {e.number: e for e in run.events}
    finished = [r for r in real if r.state in ("COMPLETE", "PRUNED", "FAIL")]
    assert sorted(replayed) == [r.number for r in finished]
    for r in finished:
        e = replayed[r.number]
        where = f"trial {r.number} ({r.origin}, {r.state})"
        assert r.candidate is not None, where
        assert e.key == space.normalise(r.candidate).key(), where
        assert e.origin == r.origin, where
        assert e.decisions == tuple((int(d["epoch"]), bool(d["keep"])) for d in r.halving), where
        assert e.repeat_of == r.repeat_of, where
        assert e.epochs == len(r.curve), where  # never an epoch past the real pruning
        expected = "repeat" if r.repeat_of is not None else r.state.lower()
        assert e.state == expected, where
        if r.state == "COMPLETE" and r.values is not None:
            assert e.point == (r.values["accuracy"], r.values["latency"]), where
    # the run exercised what it claims to: rungs that pruned, exemptions, and a rule proposal
    assert any(not keep for e in run.events for _, keep in e.decisions)
    assert any(r.seed_name for r in finished) and any(r.is_rule_proposal for r in finished)
