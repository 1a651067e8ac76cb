"""Halving that respects the regime (issue 12 item 3), before/after on a benchmark table.

Replays the search with halving (``rs_search.bench.replay``: the real sampler, queue, rung
decisions and exemptions; training answered from the table's recorded curves) over many seeds,
each method with the same compute (``--compute-trials`` full-budget trials), once per variant of
the rung rule:

- ``plain``: successive halving as it was before the change (seeds and rule proposals exempt, the
  rung's ranking trusted unmeasured): ``halving.regime_exemption`` answers None. Its figures equal
  those of the code before the change (checked: benchmarks/RESULTS.md);
- ``regime``: the rule as committed (``rs_search/search/halving.py``, module docstring);
- ``lenient`` (an ablation): the same, but an unmeasured rung (fewer than ``MIN_TRIALS``
  full-budget trials) prunes as plain halving does;
- ``no-size`` (an ablation): the same as ``regime`` without the size rule (``SIMILAR_SIZE``).

Prints, per sampler and variant, the share of the table's true full-budget front that halving
pruned (of the true-front candidates the runs trained, those pruned before the full budget: the
search's own asynchronous rule), the hypervolume fraction of the true front at 10/25/50/100% of
the compute (median [IQR] over seeds), and the epochs, trials, complete and pruned per run.

    OMP_NUM_THREADS=1 python benchmarks/halving_regime.py \\
        --table tests/bench/data/tiny-digits-9ep.jsonl --seeds 20 --compute-trials 16

``--synthetic-long EPOCHS`` replays instead a table of every candidate of the quickstart space
with **synthetic** curves drawn from a stylised model of the paper's claim (bigger nets end
higher and learn slower early; ``synthetic_long_table``): a check that the mechanism works end
to end where the effect is there by construction, not a measurement of its size.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rs_search.bench.compare import FRACTIONS, compare, summarise  # noqa: E402
from rs_search.bench.metrics import rank_agreement, true_front  # noqa: E402
from rs_search.bench.replay import Method  # noqa: E402
from rs_search.bench.table import Table, load_table  # noqa: E402
from rs_search.search import halving  # noqa: E402

VARIANTS = ("plain", "regime", "lenient", "no-size")
QUICKSTART = ROOT / "spaces" / "quickstart.yaml"


def synthetic_long_table(budget: int, seed: int = 0) -> Table:
    """Every candidate of the quickstart space, ``budget`` epochs, curves from a stylised model
    of Bello et al. (2021, Sec. 7), not data. With ``s`` the candidate's log-parameters and ``r``
    its log-resolution scaled to [0, 1]: final top-1 ``F = 88 + 7 s + 3 r`` (+-0.7 for the
    recipe), a learning time constant ``T = 1 + 5 s`` epochs, top-1 at epoch ``e``
    ``10 + (F - 10) (1 - exp(-e / T)) / (1 - exp(-budget / T))`` + N(0, 0.3), and a latency
    proportional to FLOPs (+5% noise). Every number is made up for the check."""
    import random

    from rs_search.bench.grid import draw_grid
    from rs_search.bench.table import Curve, Entry, Header, Latency, TrainInfo
    from rs_search.models.complexity import count_flops, count_params
    from rs_search.space import load_space

    space = load_space(QUICKSTART)
    grid = draw_grid(space, epochs=budget, n=100_000, seed=seed)
    rng = random.Random(seed)
    sizes = {c.key(): (count_params(c.arch), count_flops(c.arch)) for c in grid.candidates}
    logp = [math.log(p) for p, _ in sizes.values()]
    top_flops = max(f for _, f in sizes.values())
    entries = []
    for c in grid.candidates:
        params, flops = sizes[c.key()]
        s = (math.log(params) - min(logp)) / (max(logp) - min(logp))
        r = math.log(c.arch.resolution / 8) / math.log(48 / 8)
        final = 88 + 7 * s + 3 * r + rng.uniform(-0.7, 0.7)
        tau = 1 + 5 * s
        top1 = tuple(
            min(100.0, 10 + (final - 10) * (1 - math.exp(-e / tau)) / (1 - math.exp(-budget / tau)))
            + rng.gauss(0, 0.3)
            for e in range(1, budget + 1)
        )
        ones = tuple(1.0 for _ in top1)
        latency = (0.5 + 30 * flops / top_flops) * rng.lognormvariate(0, 0.05)
        entries.append(
            Entry(
                candidate=c,
                status="done",
                params=params,
                flops=flops,
                latency=Latency(
                    median_ms=latency, p90_ms=latency, spread=0.0, memory_mb=1.0, stable=True
                ),
                curve=Curve(
                    val_top1=top1,
                    val_top1_raw=top1,
                    val_loss=ones,
                    train_loss=ones,
                    train_top1=top1,
                    train_eval_top1=top1,
                    train_eval_loss=ones,
                    epoch_seconds=ones,
                ),
                train=TrainInfo(seed=seed, seconds=0.0, resumed_from_epoch=None, finished_at=""),
            )
        )
    header = Header(
        space=space,
        data="synthetic model (benchmarks/halving_regime.py)",
        budget_epochs=budget,
        seed=seed,
        grid_mode=grid.mode,
        grid_requested=len(entries),
        grid_distinct=grid.distinct,
        profile=space.target.to_dict(),
        profile_key="synthetic",
        device_name="none (synthetic)",
        train_device="none (synthetic)",
        versions={},
        created_at="",
        updated_at="",
    )
    return Table(header=header, entries=tuple(entries))


def use(variant: str) -> Callable[[], None]:
    """Switch halving's rung rule to ``variant``; returns the undo."""
    saved = (halving.regime_exemption, halving.PRUNE_UNMEASURED, halving.SIMILAR_SIZE)

    def undo() -> None:
        halving.regime_exemption, halving.PRUNE_UNMEASURED, halving.SIMILAR_SIZE = saved

    if variant == "plain":
        halving.regime_exemption = lambda evidence, params_m: None  # type: ignore[assignment]
    elif variant == "lenient":
        halving.PRUNE_UNMEASURED = True
    elif variant == "no-size":
        halving.SIMILAR_SIZE = math.inf
    elif variant != "regime":
        raise SystemExit(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
    return undo


def _hv(cell: tuple[float, float, float]) -> str:
    med, q25, q75 = cell
    return "n/a" if math.isnan(med) else f"{med:.3f} [{q25:.3f}-{q75:.3f}]"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--table", type=Path)
    source.add_argument("--synthetic-long", type=int, metavar="EPOCHS")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--compute-trials", type=int, default=16)
    parser.add_argument("--samplers", default="tpe,random", help="comma-separated")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated")
    parser.add_argument("--eta", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if args.synthetic_long is not None:
        table = synthetic_long_table(args.synthetic_long)
        args.table = f"synthetic-long ({args.synthetic_long} epochs, made-up curves)"
    elif not args.table.is_file():
        print(f"no table at {args.table}", file=sys.stderr)
        return 2
    else:
        table = load_table(args.table)
    h = table.header
    front = true_front(table)
    print(
        f"table {args.table}: {len(table.done)} done of {len(table.entries)}, "
        f"{h.budget_epochs} epochs on {h.data}; true front {len(front)}: "
        + "; ".join(e.label for e in front)
    )
    taus = ", ".join(
        f"e{a.epoch} {a.tau:.2f}" for a in rank_agreement(table) if math.isfinite(a.tau)
    )
    print(f"rank agreement with the full budget over the table (Kendall tau): {taus}")
    print(
        f"compute per run: {args.compute_trials} full-budget trials = "
        f"{args.compute_trials * h.budget_epochs} epochs; {args.seeds} seeds; eta {args.eta}\n"
    )
    head = ["sampler", "rule", "front pruned"] + [f"HV @{f:.0%}" for f in FRACTIONS]
    head += ["epochs", "trials", "complete", "pruned", "s"]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head), flush=True)
    for sampler in args.samplers.split(","):
        for variant in args.variants.split(","):
            undo = use(variant)
            started = time.monotonic()
            try:
                method = Method(name=variant, sampler=sampler, halving=True, eta=args.eta)
                comparison = compare(
                    table, [method], seeds=range(args.seeds), compute_trials=args.compute_trials
                )
            finally:
                undo()
            s = summarise(comparison)[0]
            cells = [sampler, variant]
            cells.append("n/a" if math.isnan(s.front_pruned) else f"{s.front_pruned:.0%}")
            cells += [_hv(s.hypervolume[f]) for f in FRACTIONS]
            cells += [f"{s.epochs:.0f}", f"{s.trials:.1f}", f"{s.complete:.1f}"]
            cells += [f"{s.pruned:.1f}", f"{time.monotonic() - started:.0f}"]
            print("| " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
