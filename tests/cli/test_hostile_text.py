"""Text read from a study (names, trial attributes) or given on the command line is printed as it
is: never read as rich markup, never turned into an emoji (issue 10, audit: ``status`` crashed on
a trial attribute ``evil[/x]``).

Seen failing before the fix: ``status`` exited 1 with ``MarkupError: closing tag '[/x]' at
position 4 doesn't match any open tag``; the progress bar of ``start`` raised the same error for
a description with ``[/b]``, and a table cell ``[red]x[/]`` lost its brackets.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from rs_search.cli import _common
from rs_search.cli.progress import progress
from tests.reports.factory import add_trial, demo_study, small_arch

optuna.logging.set_verbosity(optuna.logging.WARNING)

ROOT = Path(__file__).resolve().parents[2]
EVIL_STUDY = "[bold]study[/x] :thumbs_up:"
EVIL_WORKER = "evil[/x]"
EVIL_TARGET = "[link=file:///etc/passwd]t[/link]"


def test_status_prints_database_text_as_it_is(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'hostile.db'}"
    study = demo_study(storage, name=EVIL_STUDY)
    study.set_user_attr("target", EVIL_TARGET)
    add_trial(study, arch=small_arch(), state=TrialState.RUNNING, minute=50)
    running = [t for t in study.get_trials() if t.state == TrialState.RUNNING]
    storage_obj = study._storage  # the test plays a hostile writer of the shared database
    for trial in running:
        storage_obj.set_trial_user_attr(trial._trial_id, "worker", EVIL_WORKER)
    result = subprocess.run(
        [sys.executable, "-m", "rs_search.cli.main", "status", "--study", EVIL_STUDY]
        + ["--storage", storage],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"study {EVIL_STUDY} on {EVIL_TARGET}:" in out
    assert out.count(EVIL_WORKER) == len(running) == 2
    assert "👍" not in out


def test_progress_bar_and_table_show_brackets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORCE_COLOR", "1")  # rich draws its bar into a StringIO as on a terminal
    monkeypatch.setenv("COLUMNS", "200")
    stream = io.StringIO()
    with progress("search a[/b]", total=2, unit="trials", stream=stream, mode="rich") as bar:
        bar.update(completed=1, note="[red]x[/]")
    assert "search a[/b]" in stream.getvalue()
    assert "note=[red]x[/]" in stream.getvalue()

    buffer = io.StringIO()
    previous = _common.console
    _common.console = type(previous)(file=buffer, width=200, highlight=False, emoji=False)
    try:
        _common.print_table("front of [bold]s[/x]", ["trial", "config"], [["1", "[red]x[/]"]])
    finally:
        _common.console = previous
    assert "front of [bold]s[/x]" in buffer.getvalue()
    assert "[red]x[/]" in buffer.getvalue()
