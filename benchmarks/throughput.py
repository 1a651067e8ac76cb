"""Training throughput of our resnetrs50 against timm's resnetrs50, in one process.

Both models train under identical settings: 128 px, batch 32, 1000 classes, channels_last,
dropout 0.25 before the classifier, SGD momentum 0.9 with no weight decay on BN/bias
(``rs_search.train.recipe.build_optimizer``), cross-entropy with label smoothing 0.1. The two
are timed alternately in rounds after a warm-up, so that a change in machine load (other jobs,
clock boost) hits both alike; the figure per model is the median images/s over rounds and the
ratio is ours / timm's (>= 1.0: we are no slower). On CUDA the same is measured in fp32 and with
bf16 autocast.

    python benchmarks/throughput.py [--rounds 3] [--iters 3] [--warmup 2] [--device auto]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from rs_search.models import resnetrs50
from rs_search.specs import RecipeSpec
from rs_search.train.recipe import build_criterion, build_optimizer

RESOLUTION = 128
BATCH = 32


def make_step(
    model: nn.Module, device: torch.device, amp: torch.dtype | None
) -> Callable[[], None]:
    """One SGD training step on a fixed random batch (data loading is not measured)."""
    recipe = RecipeSpec(batch_size=BATCH)
    optimizer = build_optimizer(model, recipe)
    criterion = build_criterion(recipe)
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(BATCH, 3, RESOLUTION, RESOLUTION, generator=gen).to(
        device, memory_format=torch.channels_last
    )
    labels = torch.randint(0, 1000, (BATCH,), generator=gen).to(device)
    model.train()

    def step() -> None:
        with torch.autocast(
            device_type=device.type, dtype=amp or torch.float32, enabled=amp is not None
        ):
            logits = model(images)
        loss = criterion(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def timed(step: Callable[[], None], iters: int, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(iters):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return BATCH * iters / (time.perf_counter() - start)


def compare(device: torch.device, amp: torch.dtype | None, args: argparse.Namespace) -> float:
    import timm

    torch.manual_seed(0)
    ours = resnetrs50(dropout=0.25).to(device).to(memory_format=torch.channels_last)
    theirs = timm.create_model("resnetrs50", drop_rate=0.25).to(device)
    theirs = theirs.to(memory_format=torch.channels_last)
    n_ours = sum(p.numel() for p in ours.parameters())
    n_theirs = sum(p.numel() for p in theirs.parameters())
    steps = {"ours": make_step(ours, device, amp), "timm": make_step(theirs, device, amp)}
    for step in steps.values():  # warm-up: allocator, cuDNN autotuning, OpenMP pools
        for _ in range(args.warmup):
            step()
    rates: dict[str, list[float]] = {name: [] for name in steps}
    for r in range(args.rounds):
        order = list(steps) if r % 2 == 0 else list(reversed(steps))  # alternate who goes first
        for name in order:
            rates[name].append(timed(steps[name], args.iters, device))
    med = {name: statistics.median(v) for name, v in rates.items()}
    label = "bf16" if amp == torch.bfloat16 else "fp32"
    print(f"[{device.type} {label}] params ours {n_ours / 1e6:.2f}M, timm {n_theirs / 1e6:.2f}M")
    for name, values in rates.items():
        spread = f"{min(values):.1f}..{max(values):.1f}"
        print(f"[{device.type} {label}] {name:5s} {med[name]:8.1f} img/s (rounds: {spread})")
    ratio = med["ours"] / med["timm"]
    print(f"[{device.type} {label}] ratio ours/timm = {ratio:.3f}")
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iters", type=int, default=3, help="timed steps per model per round")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    name = (
        args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    )
    device = torch.device(name)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        print(f"device: {torch.cuda.get_device_name(device)}; torch {torch.__version__}")
    else:
        print(f"device: CPU, {torch.get_num_threads()} threads; torch {torch.__version__}")
    print(
        f"resnetrs50 training, {RESOLUTION} px, batch {BATCH}, channels_last, "
        f"{args.rounds} rounds x {args.iters} steps after {args.warmup} warm-up steps"
    )
    compare(device, None, args)
    if device.type == "cuda":
        compare(device, torch.bfloat16, args)


if __name__ == "__main__":
    main()
