"""Is the search any good? Every method replayed on a benchmark table over many seeds (issue 11).

Replays rs-search's default (what ``rs-search start`` does without flags, read from its
signature), TPE, NSGA-II and random each with and without halving, GP without, and Syne Tune's
MO-ASHA on one table (``rs_search.bench.replay``: the real samplers, queue, rung decisions,
exemptions and scaling-rule proposals; training answered from the table's curves), all with the
same compute: the epochs a search without halving spends on ``--compute-trials`` trials. Prints

- the table and the fidelity check (rank agreement, Kendall tau, between top-1 at each epoch and
  at the full budget; the share of the true front that halving at the default rungs prunes);
- per method, the hypervolume of the (top-1, latency) front as a fraction of the table's true
  front at 10, 25, 50 and 100% of that compute (median and IQR over seeds), the epochs, trials,
  repeats, no-effect variants and skipped candidates (not in the table) per run;
- issue 11's bar: rs-search's default at 50% against the best method without halving at 100%;

and writes a plotly HTML figure of hypervolume against compute (``--out``).

    python benchmarks/search_quality.py --table tests/bench/data/tiny-digits-9ep.jsonl
    python benchmarks/search_quality.py --table benchmarks/data/quickstart-digits-12ep.jsonl \\
        --seeds 20 --compute-trials 16 --out search-quality.html
"""

from __future__ import annotations

import argparse
import html
import inspect
import math
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rs_search.bench.compare import (  # noqa: E402
    FRACTIONS,
    Comparison,
    MethodSummary,
    compare,
    summarise,
    verdict,
)
from rs_search.bench.metrics import front_lost_to_halving, rank_agreement, true_front  # noqa: E402
from rs_search.bench.replay import Method, standard_methods  # noqa: E402
from rs_search.bench.table import Table, load_table  # noqa: E402

DEFAULT = "rs-search default"


def default_method() -> Method:
    """What ``rs-search start`` does without flags: its signature's defaults."""
    from rs_search.cli.search_cmd import start

    p = inspect.signature(start).parameters
    return Method(
        name=DEFAULT,
        sampler=str(p["sampler"].default),
        halving=bool(p["halving"].default),
        eta=int(p["eta"].default),
        min_rung=p["min_rung"].default,
        auto_scale=bool(p["auto_scale"].default),
    )


def default_rungs(table: Table, method: Method) -> tuple[int, ...]:
    from rs_search.search.settings import settings_from_space

    settings = settings_from_space(
        table.header.space,
        budget_epochs=table.header.budget_epochs,
        data=table.header.data,
        eta=method.eta if method.halving else None,
        min_rung=method.min_rung,
        n_trials=None,
        sampler=method.sampler,
        seed=None,
        heartbeat_interval=30,
        grace_period=120,
        artifacts=".",
    )
    return settings.rungs


def fidelity_lines(table: Table, method: Method) -> list[str]:
    rungs = default_rungs(table, method)
    lines = ["rank agreement (Kendall tau-b of top-1 at the epoch vs at the full budget):"]
    for a in rank_agreement(table):
        mark = "  <- rung" if a.epoch in rungs else ""
        tau = "n/a" if math.isnan(a.tau) else f"{a.tau:.3f}"
        lines.append(f"  epoch {a.epoch:>3}: tau {tau} (n {a.n}){mark}")
    if rungs:
        loss = front_lost_to_halving(table, rungs=rungs, eta=method.eta)
        lines.append(
            f"synchronous halving at the default rungs {', '.join(map(str, rungs))} (eta "
            f"{method.eta}, seeds exempt) prunes {len(loss.pruned)} of {len(loss.front)} "
            f"true-front candidates ({loss.share:.0%})"
            + "".join(f"\n  {e.label}: pruned at epoch {epoch}" for e, epoch in loss.pruned)
        )
    else:
        lines.append("the default has no rung on this budget")
    return lines


def _hv(cell: tuple[float, float, float]) -> str:
    med, q25, q75 = cell
    return "n/a" if math.isnan(med) else f"{med:.3f} [{q25:.3f}-{q75:.3f}]"


def method_rows(summaries: list[MethodSummary]) -> tuple[list[str], list[list[str]]]:
    head = ["method"] + [f"HV @{f:.0%}" for f in FRACTIONS] + ["epochs", "GFLOP-ep"]
    head += ["trials", "complete", "pruned", "repeats", "exact rep.", "variants"]
    head += ["skip samp.", "skip rule", "idle runs", "front pruned"]
    rows = []
    for s in summaries:
        rows.append(
            [s.method.name]
            + [_hv(s.hypervolume[f]) for f in FRACTIONS]
            + [f"{s.epochs:.0f}", f"{s.flops / 1e9:.3g}"]
            + [f"{v:.1f}" for v in (s.trials, s.complete, s.pruned, s.repeats)]
            + [f"{v:.1f}" for v in (s.exact_repeats, s.no_effect_variants)]
            + [f"{s.skipped_sampler:.1f}", f"{s.skipped_rule:.1f}", str(s.idle_runs)]
            + ["n/a" if math.isnan(s.front_pruned) else f"{s.front_pruned:.0%}"]
        )
    return head, rows


def markdown(head: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def write_html(path: Path, comparison: Comparison, text: str) -> None:
    from rs_search.bench.figures import hypervolume_figure

    fig = hypervolume_figure(comparison)
    body = fig.to_html(full_html=False, include_plotlyjs=True)
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>search quality</title></head>"
        f"<body>{body}<pre>{html.escape(text)}</pre></body></html>\n"
    )
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(page)
    tmp.replace(path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", type=Path, required=True, help="a `rs-search bench table` file")
    parser.add_argument("--seeds", type=int, default=20, help="seeds per method (0..N-1)")
    parser.add_argument(
        "--compute-trials",
        type=int,
        default=16,
        help="the compute every method gets, in full-budget trials (the no-halving compute; "
        "16: the README quickstart's --trials)",
    )
    parser.add_argument("--out", type=Path, default=Path("search-quality.html"))
    parser.add_argument(
        "--methods", default="", help="comma-separated method names to run (default: all)"
    )
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    table = load_table(args.table)
    h = table.header
    default = default_method()
    methods = standard_methods(default)
    if args.methods:
        wanted = {m.strip() for m in args.methods.split(",")}
        methods = tuple(m for m in methods if m.name in wanted)
    lines = [
        f"table {args.table}: {h.space.name or 'space'}, {len(table.done)} done of "
        f"{len(table.entries)} ({h.grid_mode}"
        + (f" of {h.grid_distinct} distinct" if h.grid_distinct else "")
        + f"), {h.budget_epochs} epochs on {h.data}, latency on {h.profile.get('name')} "
        f"({h.device_name}); true front {len(true_front(table))} candidates",
        f"{DEFAULT} (rs-search start's defaults): {default.describe()}; rungs "
        f"{', '.join(map(str, default_rungs(table, default))) or 'none'}",
        f"compute per run: {args.compute_trials} full trials = "
        f"{args.compute_trials * h.budget_epochs} epochs; {args.seeds} seeds per method",
        "",
        *fidelity_lines(table, default),
        "",
    ]
    print("\n".join(lines), flush=True)
    started = time.monotonic()

    def progress(method: Method, seed: int) -> None:
        if seed == 0:
            print(f"  replaying {method.name} ...", file=sys.stderr, flush=True)

    comparison = compare(
        table,
        methods,
        seeds=range(args.seeds),
        compute_trials=args.compute_trials,
        progress=progress,
    )
    took = time.monotonic() - started
    head, rows = method_rows(summarise(comparison))
    result = [
        "hypervolume fraction of the true front, median [IQR] over seeds, at shares of the "
        "no-halving compute; the other columns are means per run (epochs trained, forward "
        "GFLOPs x epochs, trials; repeats: pruned untrained, an earlier trial had the candidate; "
        "exact rep.: the same candidate as sampled seen before; variants: differs only in a "
        "parameter with no effect; skipped: not in the table; idle runs: ended before spending "
        "the compute; front pruned: of the true-front candidates the runs trained, the share "
        "halving pruned before the full budget, the search's own asynchronous rule)",
        markdown(head, rows),
        "",
    ]
    if any(m.name == DEFAULT for m in methods):
        result.append(verdict(comparison, default=DEFAULT).words())
    result.append(
        f"({len(methods)} methods x {args.seeds} seeds replayed in {took:.0f} s, one process)"
    )
    print("\n".join(result), flush=True)
    write_html(args.out, comparison, "\n".join(lines + result))
    print(f"figure: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
