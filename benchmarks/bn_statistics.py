"""Early-epoch validation figures before and after the batch-norm refresh (issue 12 item 3).

Trains each candidate of a small grid drawn from a space (``rs_search.bench.grid.draw_grid``:
the space's seeds, then a seeded draw) with the engine, and after every epoch records two
validation figures of the same weights:

- **after**: what the engine reports (BN statistics recomputed on the fixed training subset,
  ``rs_search/train/batchnorm.py``);
- **before**: the same weights with the running statistics training left in them (PyTorch's
  momentum ``--bn-momentum``, averaged by the EMA when the recipe has one): what the engine
  reported before the refresh existed. After the engine's evaluation the modules get those
  running statistics back, so they evolve exactly as in the old engine.

BN momentum does not change training (train mode normalises with batch statistics), so both
figures come from one trajectory. ``--variants`` adds other ways to recompute the statistics of
the same weights, each on a copy: ``one-batch`` (the first training batch of the subset, what
a momentum of 1.0 keeps), ``plain`` (the subset preprocessed like validation instead of
augmented) and ``full`` (the whole training split, augmented: the reference the others are
compared with). ``--bn-momentum 1.0`` with ``--ema-decay 0.9999`` gives the
official code's scheme as "before" (tensorflow/tpu resnet_rs configs: ``bn_momentum: 0``, TF's
decay, i.e. PyTorch momentum 1.0, and the EMA averages the statistics).

Printed per condition: val top-1 per epoch for every candidate, the mean absolute difference
before - after at epochs 1-4 and at the end, and Kendall's tau (``rs_search.bench.metrics``)
between top-1 at ``--rung`` and at the last epoch over the candidates. Results are kept in
``--out`` (JSON, one entry per candidate, written after each: a rerun continues).

    OMP_NUM_THREADS=1 python benchmarks/bn_statistics.py --space benchmarks/data/bn-probe.yaml \
        --candidates 8 --budget 12 --out bn-before-after.json [--ema-decay 0.9999] \
        [--bn-momentum 0.1]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from rs_search.bench.grid import draw_grid
from rs_search.bench.metrics import kendall_tau
from rs_search.space import load_space
from rs_search.specs import Candidate
from rs_search.train.batchnorm import batch_norms, recompute_statistics
from rs_search.train.distributed import DistContext
from rs_search.train.loader import SeededItems, batches, item_seed
from rs_search.train.trainer import RunOptions, Trainer


class BeforeAfter(Trainer):
    """The engine, with the old engine's figure of the same weights beside its own."""

    def __init__(
        self, *args: Any, momentum: float, variants: tuple[str, ...] = (), **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.variants = variants
        for module in self._eval_modules():
            for bn in batch_norms(module):
                bn.momentum = momentum
        self.rows: list[dict[str, Any]] = []

    def _finish_epoch(self, run: Any) -> Any:
        stale = [copy.deepcopy(m) for m in self._eval_modules()]
        metrics = super()._finish_epoch(run)
        row: dict[str, Any] = {"epoch": metrics.epoch, "after": metrics.val_top1}
        row["after_raw"] = metrics.val_top1_raw
        row["before"], row["before_raw"] = self._top1(stale[-1]), self._top1(stale[0])
        row["train_top1"] = metrics.train_top1
        row["train_eval_top1"] = metrics.train_eval_top1
        for variant in self.variants:
            copies = [copy.deepcopy(m) for m in stale]
            with torch.random.fork_rng():
                torch.manual_seed(0)
                recompute_statistics(copies, self._variant_batches(variant))
            row[variant], row[f"{variant}_raw"] = self._top1(copies[-1]), self._top1(copies[0])
        for module, old in zip(self._eval_modules(), stale, strict=True):
            for mine, theirs in zip(module.buffers(), old.buffers(), strict=True):
                mine.copy_(theirs)  # training goes on with the old engine's statistics
        self.rows.append(row)
        return metrics

    def _variant_batches(self, variant: str) -> Iterator[torch.Tensor]:
        if variant in ("one-batch", "plain"):
            self.subset.augmented = variant == "one-batch"
            for i, (images, _) in enumerate(batches(self.subset_loader)):
                if variant == "one-batch" and i > 0:
                    break
                yield self.normalize(images)
            return
        assert variant == "full", variant
        keys = [(i, item_seed(self.options.seed, 0, i)) for i in range(self.source.train_size)]
        loader = DataLoader(SeededItems(self.source.train), batch_size=64, sampler=keys)
        for images, _ in loader:
            yield self.normalize(images)

    @torch.no_grad()
    def _top1(self, module: nn.Module) -> float:
        module.eval()
        correct = total = 0
        for images, labels in batches(self.val_loader):
            correct += int((module(self.normalize(images)).argmax(1) == labels).sum())
            total += len(labels)
        return 100.0 * correct / total


def _label(i: int, cand: Candidate) -> str:
    a, r = cand.arch, cand.recipe
    return (
        f"{i}: {a.label} w{a.width:g} r{a.resolution} do{r.dropout:g} "
        f"ra{r.randaug_layers}x{r.randaug_magnitude}"
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    space = load_space(args.space)
    grid = draw_grid(space, epochs=args.budget, n=args.candidates, seed=args.seed)
    out = Path(args.out)
    done: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {}
    for i, cand in enumerate(grid.candidates):
        if args.ema_decay is not None:
            cand = replace(cand, recipe=replace(cand.recipe, ema_decay=args.ema_decay))
        label = _label(i, cand)
        if label in done:
            continue
        start = time.perf_counter()
        options = RunOptions(data=args.data, device="cpu", progress=False, seed=args.seed)
        trainer = BeforeAfter(
            cand,
            options,
            ctx=DistContext(),
            momentum=args.bn_momentum,
            variants=tuple(args.variants.split(",")) if args.variants else (),
        )
        try:
            trainer.fit()
        finally:
            trainer.close()
        done[label] = {"rows": trainer.rows, "seconds": round(time.perf_counter() - start, 1)}
        out.write_text(json.dumps(done, indent=1) + "\n")
        print(f"{label}: {done[label]['seconds']:.0f} s", flush=True)
    return done


def summary(done: dict[str, Any], rung: int) -> None:
    rows = [entry["rows"] for entry in done.values()]
    columns = [k for k in rows[0][0] if k not in ("epoch", "train_top1", "train_eval_top1")]
    for which in columns:
        print(f"\nval top-1 per epoch, {which}")
        for label, entry in done.items():
            print(f"  {label:40s}", " ".join(f"{r[which]:5.1f}" for r in entry["rows"]))
    last = len(rows[0])
    epochs = sorted({e for e in (1, 2, 3, 4, last) if e <= last})
    base = "full" if "full" in columns else "after"
    print(f"\n{'':12s} mean |x - {base}| at epochs {epochs} (x_raw against {base}_raw);")
    print(
        f"{'':12s} mean top-1 at epochs 1, {rung}, {last}; Kendall tau of top-1 at {rung} vs {last}"
    )
    for which in columns:
        reference = base + ("_raw" if which.endswith("_raw") else "")
        diffs = [
            statistics.mean(abs(r[e - 1][which] - r[e - 1][reference]) for r in rows)
            for e in epochs
        ]
        means = [statistics.mean(r[e - 1][which] for r in rows) for e in (1, min(rung, last), last)]
        tau, _ = kendall_tau([r[rung - 1][which] for r in rows], [r[-1][which] for r in rows])
        print(
            f"{which:12s} "
            + " ".join(f"{d:5.1f}" for d in diffs)
            + ";  "
            + " ".join(f"{m:5.1f}" for m in means)
            + f";  tau {tau:.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--space", default="benchmarks/data/bn-probe.yaml")
    parser.add_argument("--data", default="digits")
    parser.add_argument("--candidates", type=int, default=8)
    parser.add_argument("--budget", type=int, default=12, help="epochs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rung", type=int, default=4, help="epoch of the first rung")
    parser.add_argument("--ema-decay", type=float, default=None, help="override the space's")
    parser.add_argument("--bn-momentum", type=float, default=0.1, help="PyTorch's convention")
    parser.add_argument("--variants", default="", help="one-batch,plain,full (comma-separated)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    summary(run(args), args.rung)


if __name__ == "__main__":
    main()
