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
from rs_search.bench.table import load_table  # noqa: E402
from rs_search.search import halving  # noqa: E402

VARIANTS = ("plain", "regime", "lenient", "no-size")


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
    parser.add_argument("--table", type=Path, required=True)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--compute-trials", type=int, default=16)
    parser.add_argument("--samplers", default="tpe,random", help="comma-separated")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated")
    parser.add_argument("--eta", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if not args.table.is_file():
        print(f"no table at {args.table}", file=sys.stderr)
        return 2
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
