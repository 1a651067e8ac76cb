"""``rs-search report``, ``rs-search dashboard`` and ``rs-search status``: look at a search.

Thin: parse, call ``rs_search.reports``, print. Heavy imports (optuna, plotly, torch for FLOPs)
happen inside the commands so that ``rs-search --help`` stays fast.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from datetime import datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer
from rich.markup import escape

from rs_search.cli._common import HELP_STORAGE
from rs_search.errors import RsSearchError

StudyName = Annotated[str, typer.Option("--study", help="Study name.", show_default=False)]
Storage = Annotated[str | None, typer.Option("--storage", help=HELP_STORAGE)]


def register(app: typer.Typer) -> None:
    """Add ``report``, ``dashboard`` and ``status`` to ``app``."""
    app.command("report")(report)
    app.command("dashboard")(dashboard)
    app.command("status")(status)


def report(
    study: StudyName,
    storage: Storage = None,
    out: Annotated[
        Path, typer.Option("--out", help="HTML file to write (self-contained, opens offline).")
    ] = Path("report.html"),
    png: Annotated[
        Path | None,
        typer.Option(
            "--png",
            help="Also write each figure as DIR/<figure>.png (needs Chromium).",
            metavar="DIR",
        ),
    ] = None,
) -> None:
    """Write a study's figures into one self-contained HTML file (PNGs too with --png).

    Figures: the Pareto front per hardware, hypervolume against compute, FLOPs vs latency and
    parameters vs memory, scaling curves, learning curves, the fidelity of the halving rungs,
    and the selector's proposals.
    """
    from rs_search.cli._common import console, write_atomic
    from rs_search.env import Environment
    from rs_search.reports.png import write_pngs
    from rs_search.reports.report import render_html, study_sections
    from rs_search.study.read import read_study
    from rs_search.study.storage import open_study

    environment = Environment.from_environ()
    # Where the files go is checked before the study is read (minutes for a large one).
    if out.is_dir():
        raise RsSearchError(f"--out {out}: is a folder; name the HTML file to write")
    _check_writable(out.parent, "--out")
    if png is not None:
        if png.exists() and not png.is_dir():
            raise RsSearchError(f"--png {png}: exists and is not a folder")
        _check_writable(png, "--png")
    opened = open_study(study, storage, retry_seconds=environment.storage_retry_s)
    try:
        info, records, sections = study_sections(read_study(opened.study), storage_url=opened.url)
    finally:
        opened.close()
    write_atomic(out, render_html(info, records, sections), make_parent=True)
    size_mb = out.stat().st_size / 1e6
    console.print(
        f"report: {out} ({len(sections)} figures, {len(records)} trials, {size_mb:.1f} MB)",
        soft_wrap=True,
        markup=False,
    )
    if png is not None:
        try:
            paths = write_pngs(sections, png)
        except OSError as exc:
            raise RsSearchError(f"--png {png}: cannot write ({exc.strerror or exc})") from None
        console.print(f"figures: {len(paths)} PNG files in {png}", soft_wrap=True, markup=False)


def _check_writable(folder: Path, flag: str) -> None:
    """``folder`` (or the nearest existing folder above it, where it would be created) can take
    new files; otherwise one line, before any work is done."""
    import os

    existing = folder if str(folder) else Path(".")
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise RsSearchError(f"{flag} {folder}: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise RsSearchError(f"{flag} {folder}: cannot write in {existing} (permission denied)")


def dashboard(
    storage: Storage = None,
    host: Annotated[
        str,
        typer.Option(
            "--host",
            help="Address to bind; the dashboard has no "
            "authentication, so loopback unless you mean it.",
        ),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8080,
) -> None:
    """Serve optuna-dashboard on the study storage until Ctrl-C (SIGINT) or SIGTERM."""
    from rs_search.cli._common import console, err_console
    from rs_search.env import Environment
    from rs_search.reports.dashboard import LOOPBACK, serve
    from rs_search.storage.url import mask_url, resolve_storage_url
    from rs_search.study.storage import open_existing_storage

    environment = Environment.from_environ()
    if not 0 <= port <= 65535:
        raise RsSearchError(f"--port {port}: must be between 0 and 65535 (0: any free port)")
    url = resolve_storage_url(storage)
    rdb = open_existing_storage(url, retry_seconds=environment.storage_retry_s)
    stop = threading.Event()
    received: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    if host not in LOOPBACK:
        err_console.print(
            f"warning: serving on {host}, reachable from other machines; "
            "optuna-dashboard has no authentication",
            markup=False,
        )

    def ready(address: str) -> None:
        console.print(
            f"optuna-dashboard for {mask_url(url)} at {address} (Ctrl-C to stop)",
            soft_wrap=True,
            markup=False,
        )
        sys.stdout.flush()

    try:
        serve(rdb, host=host, port=port, stop=stop, on_ready=ready)
    finally:
        rdb.engine.dispose()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    name = signal.Signals(received[0]).name if received else "stop"
    console.print(f"dashboard stopped ({name})")


def status(
    study: StudyName,
    storage: Storage = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object (for scripts).")
    ] = False,
) -> None:
    """Where a search stands: trials, live workers, compute, the front and an ETA.

    Trials by state, live workers (from Optuna's heartbeats) and what each trains, compute used
    against the budget, the current Pareto front, the rank agreement of each halving rung with
    the final top-1 (with a warning where it is too low to trust), and when the trial budget
    will be spent.
    """
    from rs_search.env import Environment
    from rs_search.reports.status import study_status
    from rs_search.study.read import read_study
    from rs_search.study.record import count_states
    from rs_search.study.storage import heartbeat_ages, open_study

    environment = Environment.from_environ()
    opened = open_study(study, storage, retry_seconds=environment.storage_retry_s)
    try:
        snapshot = read_study(opened.study)
        ages = heartbeat_ages(opened.storage.engine, opened.study_id)
    finally:
        opened.close()
    records = list(snapshot.records)
    result = study_status(
        records,
        snapshot.info,
        heartbeats=ages,
        now=datetime.now(),
        finished=count_states(records)["finished"],
    )
    if as_json:
        typer.echo(json.dumps(result.to_json(), indent=2, default=str))
        return
    _print_status(result)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    return str(timedelta(seconds=int(seconds)))


def _print_status(result: object) -> None:
    from rs_search.cli._common import console, print_table
    from rs_search.reports.status import StudyStatus

    assert isinstance(result, StudyStatus)
    states = ", ".join(f"{n} {s.lower()}" for s, n in result.states.items())
    console.print(  # the study's name and target are database text: never markup
        f"study [bold]{escape(result.study)}[/] on {escape(result.target)}: {result.total} "
        f"trials ({states})",
        soft_wrap=True,
    )
    if result.trial_budget:
        console.print(f"budget: {result.finished} of {result.trial_budget} trials finished")
    if result.epochs_budget:
        console.print(
            f"compute: {result.epochs_spent} of at most {result.epochs_budget} epochs "
            f"({result.epochs_spent / result.epochs_budget:.0%}), "
            f"{result.device_hours:.2f} device-hours"
        )
    else:
        console.print(
            f"compute: {result.epochs_spent} epochs, {result.device_hours:.2f} "
            "device-hours (no trial budget recorded)"
        )
    console.print(
        f"workers: {result.live_workers} live"
        + (f", {result.stale_trials} stale trial(s)" if result.stale_trials else "")
    )
    if result.workers:
        print_table(
            None,
            ["trial", "worker", "config", "epoch", "val top-1", "heartbeat", "live"],
            [
                (
                    w.trial,
                    w.worker or "?",
                    w.config,
                    f"{w.epoch}/{w.epochs or '?'}",
                    f"{w.val_top1:.2f}" if w.val_top1 is not None else "–",
                    f"{w.heartbeat_age_s:.0f}s ago" if w.heartbeat_age_s is not None else "none",
                    "yes" if w.live else "no",
                )
                for w in result.workers
            ],
            right=("trial", "epoch", "val top-1"),
        )
    if result.front:
        names = list(result.objectives)
        print_table(
            f"Pareto front ({len(result.front)} trials)",
            ["trial", "config", *names],
            [(f.trial, f.config, *(f"{v:.4g}" for v in f.values)) for f in result.front],
            right=("trial", *names),
        )
    else:
        console.print("front: no completed, feasible trial yet")
    for row in result.fidelity:  # the report's fidelity panel prints the same line
        console.print(f"fidelity: {row.line}", soft_wrap=True, markup=False)
    console.print(f"ETA: {_duration(result.eta_s)} ({result.eta_basis})", markup=False)
