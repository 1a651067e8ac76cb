"""What the end-of-epoch passes cost: batch-norm refresh and train accuracy measured like
validation (issue 12 items 2 and 3), beside training and the val pass.

Two parts, one process, one torch thread by default:

1. **digits, measured.** Real runs of the engine (``Trainer``) on quickstart candidates for
   ``--epochs`` epochs; each phase of every epoch is timed with ``perf_counter`` (training,
   the BN refresh on the fixed training subset, the val pass, the train-eval pass on the
   subset). Printed per candidate: median seconds per epoch of each phase and the two new passes
   as a share of the epoch.
2. **ImageNet at 160 px, estimated.** resnetrs50 at 160 px (the paper's RS-50 setting): the time
   per image of a training step (forward, backward, SGD step), of an eval-mode forward and of a
   train-mode forward without gradients (the BN refresh) at ``--batch``, on random images; scaled
   to ImageNet's split sizes (1,281,167 train, a subset of ``TRAIN_EVAL_MAX_IMAGES``, 50,000
   val) with two evaluated modules (raw weights and EMA). Data loading is not included in
   either; on an accelerator the forward/step ratio, not these CPU seconds, carries over.

    python benchmarks/eval_passes.py [--epochs 3] [--threads 1] [--batch 8] [--reps 3]
        [--skip-rs50] [--skip-digits]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from rs_search.models import resnetrs50
from rs_search.space import load_space
from rs_search.specs import Candidate, RecipeSpec
from rs_search.train.distributed import DistContext
from rs_search.train.engine import with_epochs
from rs_search.train.loader import TRAIN_EVAL_MAX_IMAGES
from rs_search.train.recipe import build_criterion, build_optimizer
from rs_search.train.trainer import RunOptions, Trainer

IMAGENET_TRAIN, IMAGENET_VAL = 1_281_167, 50_000


class TimedTrainer(Trainer):
    """The engine with its end-of-epoch phases timed (seconds per epoch, in order)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.phases: list[dict[str, float]] = []

    def refresh_statistics(self) -> None:
        start = time.perf_counter()
        super().refresh_statistics()
        self.phases.append({"bn refresh": time.perf_counter() - start})

    def evaluate(self, loader: Any) -> list[tuple[float, float]]:
        start = time.perf_counter()
        result = super().evaluate(loader)
        name = "val pass" if loader is self.val_loader else "train-eval pass"
        self.phases[-1][name] = time.perf_counter() - start
        return result


def digits(candidates: list[Candidate], epochs: int) -> None:
    print(f"digits, {epochs} epochs each, seconds per epoch (median over epochs)")
    print("candidate               train    bn refresh  train-eval  val pass  new passes/epoch")
    for cand in candidates:
        trainer = TimedTrainer(
            with_epochs(cand, epochs),
            RunOptions(data="digits", device="cpu", progress=False),
            ctx=DistContext(),
        )
        try:
            result = trainer.fit()
        finally:
            trainer.close()
        phases = trainer.phases
        epoch = statistics.median(m.epoch_seconds for m in result.curve)
        refresh = statistics.median(p["bn refresh"] for p in phases)
        train_eval = statistics.median(p["train-eval pass"] for p in phases)
        val = statistics.median(p["val pass"] for p in phases)
        train = epoch - refresh - train_eval - val
        label = f"{cand.arch.label} w{cand.arch.width:g} r{cand.arch.resolution}"
        print(
            f"{label:22s} {train:6.2f} s  {refresh:8.2f} s  {train_eval:8.2f} s  {val:6.2f} s"
            f"  {100 * (refresh + train_eval) / epoch:5.1f}% of {epoch:.2f} s"
        )


def _per_image(runs: dict[str, Callable[[], None]], batch: int, rounds: int) -> dict[str, float]:
    """Seconds per image of each run: one warm-up call each, then ``rounds`` rounds that call
    every run once in turn (a change of machine load hits all alike); the median per run."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for run in runs.values():
        run()
    for _ in range(rounds):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) / batch for name, t in times.items()}


def rs50(batch: int, reps: int) -> None:
    model = resnetrs50(resolution=160).to(memory_format=torch.channels_last)
    recipe = RecipeSpec(batch_size=batch)
    optimizer, criterion = build_optimizer(model, recipe), build_criterion(recipe)
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, 160, 160, generator=gen).to(memory_format=torch.channels_last)
    labels = torch.randint(0, 1000, (batch,), generator=gen)

    def step() -> None:
        model.train()
        loss = criterion(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def forward(train_mode: bool) -> Callable[[], None]:
        def run() -> None:
            model.train(train_mode)
            with torch.no_grad():
                model(images)

        return run

    per_image = _per_image(
        {"step": step, "eval": forward(False), "refresh": forward(True)}, batch, reps
    )
    t_step, t_eval, t_refresh = per_image["step"], per_image["eval"], per_image["refresh"]
    modules = 2  # raw weights and EMA
    train = IMAGENET_TRAIN * t_step
    refresh = modules * TRAIN_EVAL_MAX_IMAGES * t_refresh
    train_eval = modules * TRAIN_EVAL_MAX_IMAGES * t_eval
    val = modules * IMAGENET_VAL * t_eval
    print(
        f"\nresnetrs50 160 px, batch {batch}, CPU: {1 / t_step:.2f} img/s training step, "
        f"{1 / t_eval:.2f} img/s eval forward, {1 / t_refresh:.2f} img/s train-mode forward"
    )
    print(
        f"ImageNet epoch estimate (2 modules): train {train / 3600:.1f} h, bn refresh "
        f"{refresh / 60:.1f} min, train-eval {train_eval / 60:.1f} min, val {val / 60:.1f} min; "
        f"new passes {100 * (refresh + train_eval) / train:.2f}% of the training phase"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--reps", type=int, default=3, help="rounds of the resnetrs50 timings")
    parser.add_argument("--space", default="spaces/quickstart.yaml")
    parser.add_argument("--skip-rs50", action="store_true")
    parser.add_argument("--skip-digits", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    space = load_space(args.space)
    seeds = [s.candidate(epochs=12) for s in space.seeds]
    if not args.skip_digits:
        digits(seeds, args.epochs)
    if not args.skip_rs50:
        rs50(args.batch, args.reps)


if __name__ == "__main__":
    main()
