"""Tables made in memory for the table and metrics tests: real candidates of a real space, with
curves and latencies given by the test (what the metrics are computed from)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rs_search.bench.grid import draw_grid
from rs_search.bench.table import Curve, Entry, Header, Latency, Table, TrainInfo
from rs_search.space import SearchSpace, load_space

DATA = Path(__file__).parent / "data"
NANO = DATA / "nano.yaml"
QUICKSTART = Path(__file__).parents[2] / "spaces" / "quickstart.yaml"


def header(space: SearchSpace, *, budget: int, n: int, mode: str = "sampled") -> Header:
    return Header(
        space=space,
        data="synthetic",
        budget_epochs=budget,
        seed=0,
        grid_mode=mode,
        grid_requested=n,
        grid_distinct=None,
        profile=space.target.to_dict(),
        profile_key="0123456789abcdef",
        device_name="test CPU (2 CPUs)",
        train_device="test CPU (2 CPUs)",
        versions={"rs_search": "0.1.0", "torch": "2.x", "python": "3.11"},
        created_at="2026-01-01T00:00:00+00:00",
        updated_at="2026-01-01T00:00:00+00:00",
    )


def make_table(
    curves: Sequence[Sequence[float]],
    latencies: Sequence[float],
    *,
    space_file: Path = QUICKSTART,
    pending: int = 0,
) -> Table:
    """A table of ``len(curves)`` done candidates (their top-1 per epoch and latency as given)
    followed by ``pending`` pending ones, drawn from ``space_file`` (seeds first)."""
    space = load_space(space_file)
    budget = len(curves[0])
    n = len(curves) + pending
    grid = draw_grid(space, epochs=budget, n=n, seed=0)
    entries = []
    for i, candidate in enumerate(grid.candidates):
        if i >= len(curves):
            entries.append(Entry(candidate=candidate))
            continue
        top1 = tuple(float(v) for v in curves[i])
        entries.append(
            Entry(
                candidate=candidate,
                status="done",
                params=1000 + i,
                flops=100000 + i,
                latency=Latency(
                    median_ms=float(latencies[i]),
                    p90_ms=float(latencies[i]) + 0.25,
                    spread=0.02,
                    memory_mb=3.5,
                    stable=True,
                ),
                curve=Curve(
                    val_top1=top1,
                    val_top1_raw=top1,
                    val_loss=tuple(1.0 for _ in top1),
                    train_loss=tuple(1.0 for _ in top1),
                    train_top1=top1,
                    train_eval_top1=top1,
                    train_eval_loss=tuple(1.0 for _ in top1),
                    epoch_seconds=tuple(0.5 for _ in top1),
                ),
                train=TrainInfo(
                    seed=0, seconds=0.5 * budget, resumed_from_epoch=None, finished_at="now"
                ),
            )
        )
    return Table(header=header(space, budget=budget, n=n), entries=tuple(entries))
