"""Bad input to ``start`` and ``worker``: exit status 2, one clear line, nothing created (issue 5,
item 6). Real CLI processes against the real PostgreSQL server."""

from __future__ import annotations

import optuna
import pytest

from rs_search.study.storage import study_names
from tests.search.conftest import MICRO, TINY4, cli_env, run_cli

pytestmark = pytest.mark.postgres


def _one_line_error(proc) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    return lines[0]


def test_unreachable_storage_masks_password(tmp_path):
    url = "postgresql+psycopg://rsuser:s3cretpw@127.0.0.1:1/nowhere"
    for args in (
        [
            "start",
            "--space",
            str(MICRO),
            "--budget",
            "1epochs",
            "--data",
            "synthetic:10",
            "--storage",
            url,
        ],
        ["worker", "--study", "x", "--storage", url],
    ):
        proc = run_cli(*args, cwd=tmp_path)
        line = _one_line_error(proc)
        assert "s3cretpw" not in proc.stderr + proc.stdout
        assert "***" in line and "127.0.0.1" in line
    assert not list(tmp_path.iterdir())  # no SQLite file, no artifact folder


@pytest.mark.parametrize("budget", ["350", "abc", "0epochs"])
def test_malformed_budget_names_units(budget, postgres_url, tmp_path):
    proc = run_cli(
        "start",
        "--space",
        str(MICRO),
        "--budget",
        budget,
        "--storage",
        postgres_url,
        "--data",
        "synthetic:10",
        cwd=tmp_path,
    )
    line = _one_line_error(proc)
    assert "budget" in line
    if budget != "0epochs":
        assert "epochs" in line  # says which units exist
    assert study_names(postgres_url) == []
    assert not list(tmp_path.iterdir())


def test_classes_mismatch_creates_nothing(postgres_url, tmp_path):
    proc = run_cli(
        "start",
        "--space",
        str(MICRO),
        "--budget",
        "2epochs",
        "--storage",
        postgres_url,
        "--data",
        "synthetic:5",
        cwd=tmp_path,
    )
    line = _one_line_error(proc)
    assert "5 classes" in line and "num_classes" in line
    assert study_names(postgres_url) == []
    assert not list(tmp_path.iterdir())


def test_unknown_study_lists_studies(postgres_url, tmp_path):
    optuna.create_study(study_name="alpha", storage=postgres_url)
    optuna.create_study(study_name="beta", storage=postgres_url)
    proc = run_cli("worker", "--study", "gamma", env=cli_env(postgres_url), cwd=tmp_path)
    line = _one_line_error(proc)
    assert "gamma" in line and "alpha" in line and "beta" in line
    assert study_names(postgres_url) == ["alpha", "beta"]
    # the default SQLite storage: an unknown study creates no database file
    proc = run_cli("worker", "--study", "gamma", cwd=tmp_path)
    assert "no studies" in _one_line_error(proc)
    assert not (tmp_path / "rs-search.db").exists()


def test_plain_optuna_study_is_not_joined(postgres_url, tmp_path):
    optuna.create_study(study_name="plain", storage=postgres_url)
    proc = run_cli("worker", "--study", "plain", "--storage", postgres_url, cwd=tmp_path)
    assert "rs-search start" in _one_line_error(proc)


def test_resume_with_another_space_says_what_differs(postgres_url, tmp_path):
    from rs_search.search.launch import plan_start
    from rs_search.search.study import create_or_resume

    plan = plan_start(
        space_file=MICRO,
        budget="2epochs",
        study_name="s",
        storage=postgres_url,
        data="synthetic:10",
        trials=2,
        timeout=None,
        workers=1,
        device="cpu",
        sampler="tpe",
        eta=3,
        min_rung=None,
        seed=None,
        artifacts=str(tmp_path / "a"),
        heartbeat=30,
        grace=120,
    )
    create_or_resume(study_name="s", storage=postgres_url, settings=plan.settings, space=plan.space)
    before = optuna.load_study(study_name="s", storage=postgres_url).user_attrs
    proc = run_cli(
        "start",
        "--space",
        str(TINY4),
        "--budget",
        "2epochs",
        "--study",
        "s",
        "--storage",
        postgres_url,
        "--data",
        "synthetic:10",
        cwd=tmp_path,
    )
    line = _one_line_error(proc)
    assert "different settings" in line and "architecture.width" in line
    after = optuna.load_study(study_name="s", storage=postgres_url)
    assert after.user_attrs == before and after.trials == []
