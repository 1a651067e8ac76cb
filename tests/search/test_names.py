"""Study names and the commands ``start`` prints (issue 10, audit).

A name ``start`` creates is checked before anything is created (``rs_search.study.names``); the
folders of a study's files come from one helper, whatever the name; the commands printed for a
user to paste are quoted for the shell.

Seen failing before the fix: ``start --study 'a[/b]'`` created the study and its waiting trial,
then exited 1 (``MarkupError``); a 200-character unicode name and ``''`` were accepted (the empty
one silently replaced by the default name); the printed ``export`` command split a storage path
with a space into two words; ``../x`` became a checkpoint folder outside the artifact root.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from rs_search.search.artifacts import CheckpointStore
from rs_search.search.launch import next_commands, plan_start, worker_command
from rs_search.study.names import MAX_LENGTH, check_study_name, folder_name
from rs_search.study.storage import study_names
from tests.search.conftest import MICRO, cli_env, run_cli

BAD_NAMES = ["a[/b]", "é" * 200, "", "../x", "a/b", "new\nline", "-flag", "x" * (MAX_LENGTH + 1)]
GOOD_NAMES = ["micro-3epochs", "a", "Resnet_RS.v2", "0" * MAX_LENGTH]


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_good_names_are_their_own_folders(name: str) -> None:
    assert check_study_name(name) == name
    assert folder_name(name) == name


@pytest.mark.parametrize("name", BAD_NAMES + ["..", ".", "/abs", "a_b", "🦀" * 120])
def test_any_name_gets_one_safe_folder(name: str, tmp_path: Path) -> None:
    store = CheckpointStore.from_spec(str(tmp_path))
    trial = store.trial_dir(name, 3)
    assert trial.parent.parent == tmp_path  # one path component, inside the root
    assert trial.parent.name not in ("", ".", "..") and len(trial.parent.name) <= 60
    assert trial.parent.name == folder_name(name)


def test_names_that_look_alike_get_different_folders() -> None:
    assert len({folder_name(n) for n in ("a/b", "a_b", "a:b", "a b")}) == 4


@pytest.mark.parametrize("name", BAD_NAMES)
def test_start_refuses_a_bad_name_before_anything_is_created(
    name: str, postgres_url: str, tmp_path: Path
) -> None:
    args = ["start", "--space", str(MICRO), "--budget", "1epochs", "--data", "synthetic:10"]
    proc = run_cli(*args, f"--study={name}", "--storage", postgres_url, cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "a study name is 1 to 100 characters" in lines[0], proc.stderr
    assert study_names(postgres_url) == []
    assert list(tmp_path.iterdir()) == []


def test_a_bad_heartbeat_setting_creates_nothing(postgres_url: str, tmp_path: Path) -> None:
    """Passed on main already (``env.Environment`` is read at the entry point)."""
    proc = run_cli(
        "start",
        "--space",
        str(MICRO),
        "--budget",
        "1epochs",
        "--data",
        "synthetic:10",
        "--study",
        "ok",
        "--storage",
        postgres_url,
        cwd=tmp_path,
        env=cli_env(RS_SEARCH_HEARTBEAT="30"),
    )
    assert proc.returncode == 2 and "$RS_SEARCH_HEARTBEAT='30'" in proc.stderr
    assert study_names(postgres_url) == [] and list(tmp_path.iterdir()) == []


def _words(command: str, **env: str) -> list[str]:
    """The argument words bash makes of a printed command line."""
    assert command.startswith("rs-search ")
    script = "printf '%s\\n' " + command.removeprefix("rs-search ")
    out = subprocess.run(
        ["bash", "-c", script],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **env},
    )
    return out.stdout.splitlines()


def _plan(storage: str, tmp_path: Path, study: str = "micro-1epochs"):  # noqa: ANN202
    return plan_start(
        space_file=MICRO,
        budget="1epochs",
        study_name=study,
        storage=storage,
        data="synthetic:10",
        trials=2,
        timeout=None,
        workers=0,
        device="cpu",
        sampler="random",
        eta=None,
        min_rung=None,
        seed=0,
        artifacts=str(tmp_path / "art"),
        heartbeat=30,
        grace=120,
    )


def test_printed_commands_survive_the_shell(tmp_path: Path) -> None:
    folder = tmp_path / "my studies; $(touch pwned) & more"
    folder.mkdir()
    database = folder / "rs search.db"
    plan = _plan(f"sqlite:///{database}", tmp_path)
    export, report, _ = next_commands(plan)
    words = _words(export)
    assert words[:4] + words[5:] == [
        "export",
        "--study",
        "micro-1epochs",
        "--storage",
        "--out",
        "exports/micro-1epochs",
    ]
    for command in (export, report, worker_command(plan)):
        words = _words(command)
        storage = words[words.index("--storage") + 1]
        assert make_url(storage).database == str(database)  # the very file, one word
    assert _words(worker_command(plan))[:3] == ["worker", "--study", "micro-1epochs"]
    assert not (Path.cwd() / "pwned").exists() and not (tmp_path / "pwned").exists()


def test_a_password_is_named_by_the_variable_not_printed(postgres_url: str, tmp_path: Path) -> None:
    """The test server trusts its clients, so a URL with a password connects too."""
    url = postgres_url.replace("postgres@", "postgres:hunter2%26x@", 1)
    assert ":hunter2%26x@" in url
    plan = _plan(url, tmp_path)
    printed = "\n".join([*next_commands(plan), worker_command(plan)])
    assert "hunter2" not in printed
    assert _words(worker_command(plan), RS_SEARCH_STORAGE=url)[-1] == url
