"""A candidate an earlier trial trained is not trained again: the repeat ends pruned at once, the
earlier result standing for it (``rs_search.search.objective``, "Repeats"; issue 11 item 4)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rs_search.study.read import settings_of, study_records
from tests.search.conftest import DATA, cli_env, load, make_study, run_cli

pytestmark = pytest.mark.slow  # a real worker trains two candidates


def test_a_worker_does_not_train_a_repeated_candidate(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    # two distinct candidates and five trials: at least three are repeats
    make_study(storage, tmp_path, "pair", trials=5, budget=1, space=DATA / "pair.yaml")
    proc = run_cli(
        "worker", "--study", "pair", "--storage", storage, "--device", "cpu",
        "--loader-workers", "0", env=cli_env(), cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    study = load("pair", storage)
    records = study_records(study, settings_of(study).objectives)
    trained = [r for r in records if r.repeat_of is None]
    repeats = [r for r in records if r.repeat_of is not None]
    keys = {r.candidate.key() for r in records if r.candidate is not None}
    # one trained trial per distinct candidate, every other trial a repeat that trained nothing
    assert len(trained) == len(keys) <= 2 and len(repeats) == 5 - len(keys) >= 3
    assert all(r.state == "COMPLETE" and len(r.curve) == 1 for r in trained)
    assert all(r.state == "PRUNED" for r in repeats)
    by_number = {r.number: r for r in records}
    for r in repeats:
        original = by_number[r.repeat_of]
        assert original.repeat_of is None and original.number < r.number
        assert r.candidate is not None and original.candidate is not None
        assert r.candidate.key() == original.candidate.key()
        assert r.values is None and r.curve == () and r.rungs == {}
        assert original.usable and not r.usable  # the front lists the candidate once
        assert f"trial {r.number}: pruned a repeat of trial {original.number}" in proc.stdout
