"""``rs-search bench table|show``: build a tabular benchmark of real learning curves, inspect one.

Thin: parse the flags, plan and build through :mod:`rs_search.bench.build`, show progress, print
a summary. SIGINT/SIGTERM stop at the next training step with a checkpoint (exit 130); rerunning
the same command continues.
"""

from __future__ import annotations

import math
import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from rs_search.cli._common import print_table

if TYPE_CHECKING:
    from rs_search.bench.table import Entry, Table
    from rs_search.cli.progress import Progress

bench_app = typer.Typer(
    name="bench",
    help="Tabular benchmarks: train a fixed set of candidates once, then judge search methods "
    "on their recorded curves.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    """Add the ``bench`` command group to ``app``."""
    app.add_typer(bench_app)


@bench_app.command("table")
def table_command(
    space: Annotated[Path, typer.Option("--space", help="Search-space YAML to draw from.")],
    budget: Annotated[
        str, typer.Option("--budget", help="Epochs every candidate trains, e.g. 12epochs.")
    ],
    out: Annotated[
        Path, typer.Option("--out", help="The table file (JSON lines), e.g. digits-12ep.jsonl.")
    ],
    data: Annotated[
        str,
        typer.Option(
            "--data",
            help="digits | imagefolder:PATH | cifar10:PATH | cifar100:PATH | synthetic[:CLASSES]",
        ),
    ] = "digits",
    candidates: Annotated[
        int,
        typer.Option(
            "--candidates",
            min=1,
            help="How many candidates: all of them when the space has at most this many "
            "distinct ones, else this many drawn with --seed (the space's seeds included).",
        ),
    ] = 64,
    seed: Annotated[
        int, typer.Option("--seed", help="Seeds the draw and every candidate's training.")
    ] = 0,
    device: Annotated[
        str, typer.Option("--device", help="Training device: auto | cpu | cuda | cuda:INDEX.")
    ] = "auto",
    work: Annotated[
        Path | None,
        typer.Option(
            "--work",
            help="Checkpoints and the latency cache while building (default: OUT.work, "
            "removed when the table is complete).",
        ),
    ] = None,
    storage: Annotated[
        str | None,
        typer.Option(
            "--storage",
            help="SQLAlchemy URL of a latency cache to share (default: a SQLite file in --work).",
        ),
    ] = None,
) -> None:
    """Train every candidate of a grid drawn from a space to the full budget and record, per
    epoch, validation top-1 (the EMA's when the recipe has one: what the search ranks on), raw
    top-1, losses, train top-1 and seconds; plus latency (median, p90, spread) and memory on the
    space's target profile, parameters and FLOPs.

    Equivalent candidates (RandAugment magnitude with no RandAugment layer, the deep stem's
    width with the classic stem) are trained once. The file is rewritten atomically after each
    candidate; a killed or interrupted build continues where it stopped when the same command is
    run again (recorded candidates are never retrained; the running one resumes from its
    checkpoint).

    Example: rs-search bench table --space spaces/quickstart.yaml --data digits
    --budget 12epochs --candidates 64 --out digits-12ep.jsonl
    """
    from rs_search.bench.build import default_work_dir, plan_table, table_lock
    from rs_search.budget import parse_budget
    from rs_search.devices import parse_device
    from rs_search.space import load_space
    from rs_search.train.data import parse_data_spec

    parse_data_spec(data)
    parse_device(device)
    epochs = parse_budget(budget).epochs
    parsed = load_space(space)
    with table_lock(work or default_work_dir(out), out):
        table, resumed = plan_table(
            space=parsed,
            data=data,
            budget=epochs,
            candidates=candidates,
            seed=seed,
            out=out,
            device=device,
        )
        pending = [e for e in table.entries if e.status == "pending"]
        total = len(table.entries)
        if resumed:
            typer.echo(f"{out}: {total - len(pending)} of {total} candidates already recorded")
        else:
            h = table.header
            distinct = "" if h.grid_distinct is None else f" of {h.grid_distinct} distinct"
            typer.echo(
                f"{out}: {total} candidates ({h.grid_mode}{distinct}) of {parsed.name or space}, "
                f"{epochs} epochs each on {data}; latency on {h.profile['name']}"
            )
        if pending:
            table = _build(table, out=out, work=work, device=device, storage=storage)
    _summary(table, out)


def _build(
    table: Table, *, out: Path, work: Path | None, device: str, storage: str | None
) -> Table:
    """``build_table`` with a progress display; SIGINT/SIGTERM ask it to checkpoint and stop."""
    from rs_search.bench.build import build_table, default_work_dir
    from rs_search.cli.progress import progress
    from rs_search.env import Environment
    from rs_search.latency.window import protocol_for

    epochs = table.header.budget_epochs
    pending = sum(e.status == "pending" for e in table.entries)
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with progress(f"bench table {out.name}", total=pending * epochs, unit="epochs") as bar:
            return build_table(
                table,
                out=out,
                work=work or default_work_dir(out),
                device=device,
                storage=storage,
                listener=_Listener(bar, epochs),
                should_stop=stop.is_set,
                protocol=protocol_for(Environment.from_environ()),
            )
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class _Listener:
    """Build events -> the progress bar and one log line per candidate."""

    def __init__(self, bar: Progress, epochs: int) -> None:
        self.bar = bar
        self.epochs = epochs
        self.position = ""

    def started(self, entry: Entry, position: int, total: int) -> None:
        self.position = f"{position}/{total}"
        self.bar.update(candidate=self.position, top1=None)

    def resumed(self, entry: Entry, epochs_done: int) -> None:
        self.bar.log(f"resuming {entry.label} from its checkpoint at epoch {epochs_done}")
        self.bar.advance(epochs_done)

    def epoch(self, entry: Entry, row: dict[str, Any]) -> None:
        self.bar.advance(1, candidate=self.position, top1=round(float(row["val_top1"]), 2))

    def recorded(self, entry: Entry, position: int, total: int) -> None:
        if entry.status == "done":
            assert entry.latency is not None and entry.train is not None
            what = (
                f"top-1 {entry.final_top1:.2f}%  latency {entry.latency.median_ms:.3g} ms  "
                f"trained in {entry.train.seconds:.0f} s"
            )
        else:
            what = f"failed ({entry.stage}): {entry.error}"
            if entry.curve is None:  # the epochs it never trained
                self.bar.advance(self.epochs)
        self.bar.log(f"recorded {position}/{total} {entry.label}: {what}")


def _summary(table: Table, out: Path) -> None:
    from rs_search.bench.metrics import true_front

    done = table.done
    failed = [e for e in table.entries if e.status == "failed"]
    s = table.header.seconds
    typer.echo(
        f"{out}: {len(done)} done, {len(failed)} failed, "
        f"{sum(e.status == 'pending' for e in table.entries)} pending; "
        f"training {s['train'] / 60:.1f} min, latency {s['latency'] / 60:.1f} min, "
        f"wall {s['wall'] / 60:.1f} min"
    )
    if done:
        front = true_front(table)
        typer.echo(f"true front: {len(front)} candidates")


@bench_app.command("show")
def show_command(
    table_file: Annotated[
        Path, typer.Argument(help="A table made by `rs-search bench table`.", show_default=False)
    ],
    eta: Annotated[
        int, typer.Option("--eta", min=2, help="Halving rate for the pruning check.")
    ] = 3,
) -> None:
    """Validate a table and show its settings, true front and fidelity: the rank agreement
    (Kendall tau) between top-1 at each epoch and at the full budget, and which true-front
    members successive halving with ``--eta`` would prune at the search's default rungs."""
    from rs_search.bench.metrics import front_lost_to_halving, rank_agreement, true_front
    from rs_search.bench.table import load_table
    from rs_search.search.halving import default_min_rung
    from rs_search.study.settings import rung_epochs

    table = load_table(table_file)
    h = table.header
    typer.echo(
        f"{table_file}: {h.space.name or 'space'} {h.space.fingerprint()}, {h.data}, "
        f"{h.budget_epochs} epochs, seed {h.seed}, {len(table.done)} of {len(table.entries)} "
        f"done; latency on {h.profile['name']} ({h.device_name}); rs-search "
        f"{h.versions.get('rs_search', '?')}, torch {h.versions.get('torch', '?')}; "
        f"{h.seconds['wall'] / 3600:.2f} h wall"
    )
    if len(table.done) < 2:
        return
    front = true_front(table)
    print_table(
        "true front (full budget)",
        ["candidate", "top-1 %", "latency ms", "params M"],
        [
            [
                e.label,
                f"{e.final_top1:.2f}",
                f"{e.latency.median_ms:.3g}" if e.latency else "",
                f"{(e.params or 0) / 1e6:.3f}",
            ]
            for e in front
        ],
        right=["top-1 %", "latency ms", "params M"],
    )
    warmup = max(
        (v for v in (h.space.param("recipe.warmup_epochs").domain.values() or (0,))), default=0
    )
    rungs = rung_epochs(
        h.budget_epochs,
        eta=eta,
        min_rung=default_min_rung(h.budget_epochs, eta=eta, warmup_epochs=float(warmup)),
    )
    agreement = rank_agreement(table)
    print_table(
        "rank agreement with the full budget",
        ["epoch", "Kendall tau", "rung"],
        [
            [
                a.epoch,
                "n/a" if math.isnan(a.tau) else f"{a.tau:.3f}",
                "rung" if a.epoch in rungs else "",
            ]
            for a in agreement
        ],
        right=["epoch", "Kendall tau"],
    )
    loss = front_lost_to_halving(table, rungs=rungs, eta=eta)
    typer.echo(
        f"halving (eta {eta}, rungs {', '.join(map(str, rungs)) or 'none'}) prunes "
        f"{len(loss.pruned)} of {len(loss.front)} true-front candidates"
        + "".join(f"\n  {e.label}: pruned at epoch {epoch}" for e, epoch in loss.pruned)
    )


@bench_app.command("retime")
def retime_command(
    table_file: Annotated[
        Path, typer.Argument(help="A table made by `rs-search bench table`.", show_default=False)
    ],
    out: Annotated[
        Path, typer.Option("--out", help="Where the retimed table goes (may be TABLE itself).")
    ],
    storage: Annotated[
        str | None,
        typer.Option(
            "--storage",
            help="SQLAlchemy URL of the latency cache to measure into (default: a fresh SQLite "
            "file beside --out, removed afterwards; a cache's figure is reused, not retaken).",
        ),
    ] = None,
) -> None:
    """Measure the latency of every trained candidate again on the table's target profile and
    write the table with the new figures (the curves are kept). Train a table on a busy machine,
    retime it on a quiet one: timings depend on the load, seeded training does not."""
    import tempfile

    from rs_search.bench.retime import retime_table
    from rs_search.bench.table import load_table, write_table
    from rs_search.env import Environment
    from rs_search.latency.window import protocol_for

    protocol = protocol_for(Environment.from_environ())
    table = load_table(table_file)
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with tempfile.TemporaryDirectory(dir=out.resolve().parent, prefix=".retime-") as scratch:
            retimed = retime_table(
                table,
                storage=storage or f"sqlite:///{Path(scratch) / 'latency.db'}",
                protocol=protocol,
                should_stop=stop.is_set,
                on_figure=lambda label, f: typer.echo(
                    f"{label}: {f.median_ms:.3g} ms (p90 {f.p90_ms:.3g}, "
                    f"{'stable' if f.stable else 'UNSTABLE'})"
                ),
            )
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    write_table(out, retimed)
    unstable = sum(1 for e in retimed.done if e.latency is not None and not e.latency.stable)
    typer.echo(f"{out}: {len(retimed.done)} candidates retimed; {unstable} figures unstable")
