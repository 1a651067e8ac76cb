"""Where output goes, and the settings every command reads: a bad one is one line and exit status
2, with nothing half-written (issue 10, audit).

Seen failing before the fix: ``report --out`` to a folder that cannot be written exited 1 with
``FileNotFoundError: [Errno 2] No such file or directory: '/proc/.foo.html.n3z9oha0.tmp'`` and to
a path under a file with ``NotADirectoryError``; ``dashboard --port 99999`` exited 1 with
``OverflowError: bind(): port must be 0-65535``. (``RS_SEARCH_STORAGE_RETRY_S`` was already
checked at every entry on main by then, through ``env.Environment``: that part passed.)
"""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from tests.cli_runner import run_in_process
from tests.reports.factory import demo_study

optuna.logging.set_verbosity(optuna.logging.WARNING)

STUDY = "outputs"


def one_line(code: int, err: str) -> str:
    assert code == 2, err
    assert "Traceback" not in err and err.count("\n") == 1, err
    return err.strip()


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'study.db'}"
    demo_study(url, name=STUDY)
    return url


def test_report_to_a_place_that_cannot_be_written(
    storage: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    afile = tmp_path / "afile"
    afile.write_text("a file, not a folder")
    folder = tmp_path / "folder"
    folder.mkdir()
    for out, words in (
        (Path("/proc/report.html"), "/proc/report.html: cannot write"),
        (afile / "report.html", "is not a folder"),
        (folder, "is a folder"),
    ):
        code, _, err = run_in_process(
            ["report", "--study", STUDY, "--storage", storage, "--out", str(out)], capsys
        )
        assert words in one_line(code, err)
    code, _, err = run_in_process(
        ["report", "--study", STUDY, "--storage", storage, "--out", str(folder / "r.html")]
        + ["--png", str(afile)],
        capsys,
    )
    assert "--png" in one_line(code, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "folder"]
    assert not list(folder.iterdir())  # no report (written before the PNGs), no temporary file


def test_dashboard_port_out_of_range(storage: str, capsys: pytest.CaptureFixture[str]) -> None:
    for port in ("99999", "-1"):
        code, _, err = run_in_process(["dashboard", "--storage", storage, "--port", port], capsys)
        assert f"--port {port}: must be between 0 and 65535" in one_line(code, err)


ENTRIES = [
    ["status", "--study", STUDY],
    ["report", "--study", STUDY, "--out", "r.html"],
    ["export", "--study", STUDY, "--out", "exported"],
    ["dashboard", "--port", "0"],
    ["propose", "--study", STUDY],
    ["scale", "--study", STUDY, "--trial", "0"],
    ["worker", "--study", STUDY],
    ["latency-worker", "--study", STUDY, "--once"],
    ["start", "--space", "spaces/quickstart.yaml", "--budget", "1epochs", "--study", "fresh"],
]


@pytest.mark.parametrize("argv", ENTRIES, ids=[a[0] for a in ENTRIES])
@pytest.mark.parametrize("value", ["soon", "1e12"])
def test_a_bad_storage_retry_window_stops_every_entry(
    argv: list[str],
    value: str,
    storage: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("RS_SEARCH_STORAGE_RETRY_S", value)
    monkeypatch.setenv("RS_SEARCH_STORAGE", storage)
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    code, _, err = run_in_process(argv, capsys)
    assert one_line(code, err).startswith(f"error: $RS_SEARCH_STORAGE_RETRY_S={value!r}: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert optuna.get_all_study_names(storage) == [STUDY]
