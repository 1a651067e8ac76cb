"""Progress: rich bars on a terminal, plain lines when output is a pipe or a file."""

from __future__ import annotations

import io
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from rs_search.cli.progress import Progress, progress, track

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
from rs_search.cli.progress import progress
with progress("train 1-1-1-1", total=3, unit="epochs", min_interval_s=0) as bar:
    for epoch in range(3):
        bar.advance(loss=2.0 - epoch, val_top1=40.0 + epoch)
print("done")
"""


def test_plain_lines_when_not_a_terminal() -> None:
    stream = io.StringIO()  # not a TTY
    with progress("train 1-1-1-1", total=4, unit="epochs", stream=stream, min_interval_s=0) as bar:
        assert bar.mode == "plain"
        for epoch in range(4):
            bar.advance(loss=1.0 / (epoch + 1), val_top1=40.0 + epoch)
        bar.log("checkpoint written")
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("train 1-1-1-1: 0/4 epochs (0%) [0:00:00 elapsed")
    assert lines[1].startswith("train 1-1-1-1: 1/4 epochs (25%) loss=1 val_top1=40 [")
    assert "left]" in lines[1]  # an estimate once something is done
    assert lines[4].startswith("train 1-1-1-1: 4/4 epochs (100%) loss=0.25 val_top1=43 [")
    assert lines[5] == "checkpoint written"
    assert len(lines) == 6  # the closing update was already printed: no duplicate line
    assert "\r" not in stream.getvalue() and "\x1b" not in stream.getvalue()


def test_plain_lines_are_rate_limited_but_the_last_one_is_printed() -> None:
    stream = io.StringIO()
    with progress("worker", total=100, stream=stream, min_interval_s=3600) as bar:
        for _ in range(99):
            bar.advance()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2  # the first line, then the final state when the task closes
    assert lines[-1].startswith("worker: 99/100 (99%)")


def test_unknown_total_and_track() -> None:
    stream = io.StringIO()
    items = list(track(["a", "b", "c"], "enqueue", stream=stream, mode="plain"))
    assert items == ["a", "b", "c"]
    assert stream.getvalue().splitlines()[-1].startswith("enqueue: 3/3 (100%)")
    stream = io.StringIO()
    with progress("waiting for trials", stream=stream, min_interval_s=0) as bar:
        bar.update(completed=5, running=2)
    assert stream.getvalue().splitlines()[-1].startswith("waiting for trials: 5 running=2 [")


def test_rich_bar_on_a_terminal_and_nested_tasks_share_it() -> None:
    stream = io.StringIO()
    stream.isatty = lambda: True  # type: ignore[method-assign]
    with progress("worker", total=2, unit="trials", stream=stream) as outer:
        assert outer.mode == "rich"
        with progress("trial 0", total=3, unit="epochs", stream=stream) as inner:
            for _ in range(3):
                inner.advance(loss=0.5)
        outer.advance()
    text = stream.getvalue()
    assert "worker" in text and "trial 0" in text and "loss=0.5" in text
    assert "\x1b[" in text  # drawn with terminal control sequences


def test_mode_from_the_environment_and_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RS_SEARCH_PROGRESS", "off")
    stream = io.StringIO()
    with progress("quiet", total=1, stream=stream) as bar:
        bar.advance()
        bar.log("not shown")
    assert stream.getvalue() == ""
    with pytest.raises(ValueError, match="allowed: rich, plain, off"):
        Progress("x", mode="fancy")


def test_a_pipe_gets_plain_lines_and_a_terminal_gets_a_bar() -> None:
    env = {k: v for k, v in os.environ.items() if k != "RS_SEARCH_PROGRESS"}
    env["TERM"] = "xterm"
    piped = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert piped.returncode == 0
    assert piped.stderr.splitlines()[-1].startswith(
        "train 1-1-1-1: 3/3 epochs (100%) loss=0 val_top1=42 ["
    )
    assert "\x1b" not in piped.stderr

    # The same program on a pseudo-terminal draws a rich bar instead.
    main, child = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT],
        cwd=ROOT,
        stdin=child,
        stdout=child,
        stderr=child,
        env=env,
        close_fds=True,
    )
    os.close(child)
    chunks = []
    while True:
        try:
            chunk = os.read(main, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    proc.wait(timeout=60)
    os.close(main)
    output = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0
    assert "done" in output and "train 1-1-1-1" in output
    assert "\x1b[" in output and "3/3" in output
    assert "3/3 epochs (100%)" not in output  # not the plain format
