"""Training throughput of our resnetrs50 against timm's resnetrs50, in one process.

Both models train under identical settings: 128 px, batch 32, 1000 classes, channels_last,
dropout 0.25 before the classifier, SGD momentum 0.9 with no weight decay on BN/bias
(``rs_search.train.recipe.build_optimizer``), cross-entropy with label smoothing 0.1.

Noise. After a warm-up the two are timed in ALTERNATING rounds (ours, timm; then timm, ours; ...),
so that a change in machine load (other jobs, clock boost) hits both alike. Each round gives one
images/s per model and one paired ratio ours/timm; the report is the median over rounds with the
interquartile range and the min-max, and a verdict is claimed only beyond that spread: "faster"
or "slower" when every round's ratio lies on one side of 1.0, else "no difference beyond noise".
On a CPU it also reports images per CPU-second of this process (the work done, which other
processes on a shared machine inflate far less than wall-clock time). The output names the CPU
model (``/proc/cpuinfo``), the torch thread count and the load average before and after.
On CUDA the same is measured in fp32 and with bf16 autocast.

Work. Before timing, one step of each model runs under a dispatch hook that counts the aten
operators it dispatches (forward, backward, optimizer) and the bytes of the fresh tensors they
return (every output that does not alias an input: what the allocator must hand out and the
kernels must write). Those two figures do not depend on the load, so they compare the two
implementations where the clock cannot.

    python benchmarks/throughput.py [--rounds 7] [--iters 2] [--warmup 2] [--threads N]
                                    [--batch 32] [--resolution 128] [--device auto]
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from rs_search.latency.profiles import cpu_model
from rs_search.models import resnetrs50
from rs_search.specs import RecipeSpec
from rs_search.train.recipe import build_criterion, build_optimizer

RESOLUTION = 128  # defaults of --resolution and --batch
BATCH = 32
MODELS = ("ours", "timm")


@dataclass(frozen=True, kw_only=True)
class Spread:
    """Median, quartiles and extremes of one series of per-round figures."""

    median: float
    q1: float
    q3: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        if len(values) >= 2:
            q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
        else:
            q1 = q3 = values[0]
        return cls(
            median=statistics.median(values), q1=q1, q3=q3, low=min(values), high=max(values)
        )

    def text(self, digits: int = 1) -> str:
        f = f"{{:.{digits}f}}"
        return (
            f"{f.format(self.median)} (IQR {f.format(self.q1)}-{f.format(self.q3)}, "
            f"range {f.format(self.low)}-{f.format(self.high)})"
        )


def verdict(ratios: Sequence[float]) -> str:
    """What the paired per-round ratios ours/timm allow claiming: a side of 1.0 only when every
    round agrees (with 5 or more rounds that is well beyond chance: 2 x 0.5^5 = 6%)."""
    if len(ratios) < 3:
        return "too few rounds to claim a difference (use --rounds 5 or more)"
    if min(ratios) > 1.0:
        return "ours FASTER than timm in every round"
    if max(ratios) < 1.0:
        return "ours SLOWER than timm in every round"
    return "no difference beyond noise (the rounds' ratios straddle 1.0)"


class _WorkCounter(TorchDispatchMode):
    """aten operators dispatched and bytes of fresh (non-aliasing) tensors they return."""

    def __init__(self) -> None:
        super().__init__()
        self.ops = 0
        self.fresh_bytes = 0

    def __torch_dispatch__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        out = func(*args, **(kwargs or {}))
        self.ops += 1
        outs = out if isinstance(out, tuple | list) else (out,)
        for ret, tensor in zip(func._schema.returns, outs, strict=False):
            if ret.alias_info is None and isinstance(tensor, torch.Tensor):
                self.fresh_bytes += tensor.untyped_storage().nbytes()
        return out


def work_of(step: Callable[[], None]) -> tuple[int, int]:
    """(aten operators, bytes of fresh tensors) of one call of ``step``."""
    counter = _WorkCounter()
    with counter:
        step()
    return counter.ops, counter.fresh_bytes


def make_step(
    model: nn.Module, device: torch.device, amp: torch.dtype | None, batch: int, resolution: int
) -> Callable[[], None]:
    """One SGD training step on a fixed random batch (data loading is not measured)."""
    recipe = RecipeSpec(batch_size=batch)
    optimizer = build_optimizer(model, recipe)
    criterion = build_criterion(recipe)
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, resolution, resolution, generator=gen).to(
        device, memory_format=torch.channels_last
    )
    labels = torch.randint(0, 1000, (batch,), generator=gen).to(device)
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


def timed(
    step: Callable[[], None], iters: int, batch: int, device: torch.device
) -> tuple[float, float]:
    """(images per wall-clock second, images per CPU-second of this process) over ``iters``."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(iters):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    images = batch * iters
    return images / (time.perf_counter() - wall), images / (time.process_time() - cpu)


def _usable_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):  # Linux: what this process may run on
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _load() -> str:
    try:
        return "/".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def compare(device: torch.device, amp: torch.dtype | None, args: argparse.Namespace) -> float:
    import timm

    torch.manual_seed(0)
    ours = resnetrs50(dropout=0.25).to(device).to(memory_format=torch.channels_last)
    theirs = timm.create_model("resnetrs50", drop_rate=0.25).to(device)
    theirs = theirs.to(memory_format=torch.channels_last)
    n_ours = sum(p.numel() for p in ours.parameters())
    n_theirs = sum(p.numel() for p in theirs.parameters())
    size = (args.batch, args.resolution)
    steps = {
        "ours": make_step(ours, device, amp, *size),
        "timm": make_step(theirs, device, amp, *size),
    }
    for step in steps.values():  # warm-up: allocator, cuDNN autotuning, OpenMP pools
        for _ in range(args.warmup):
            step()
    tag = f"[{device.type} {'bf16' if amp == torch.bfloat16 else 'fp32'}]"
    for name in MODELS:
        ops, fresh = work_of(steps[name])
        print(
            f"{tag} work per step {name:5s} {ops} aten ops, {fresh / 2**20:.1f} MiB fresh tensors"
        )
    wall: dict[str, list[float]] = {name: [] for name in MODELS}
    cpu: dict[str, list[float]] = {name: [] for name in MODELS}
    for r in range(args.rounds):
        order = MODELS if r % 2 == 0 else MODELS[::-1]  # alternate who goes first
        for name in order:
            w, c = timed(steps[name], args.iters, args.batch, device)
            wall[name].append(w)
            cpu[name].append(c)
    print(f"{tag} params ours {n_ours / 1e6:.2f}M, timm {n_theirs / 1e6:.2f}M")
    series = [("wall-clock", wall)] + ([("CPU-time", cpu)] if device.type == "cpu" else [])
    ratio = 0.0
    for label, rates in series:
        for name in MODELS:
            print(f"{tag} {label:10s} {name:5s} img/s {Spread.of(rates[name]).text()}")
        ratios = [o / t for o, t in zip(rates["ours"], rates["timm"], strict=True)]
        print(f"{tag} {label:10s} ratio ours/timm {Spread.of(ratios).text(3)}")
        print(f"{tag} {label:10s} per round: {' '.join(f'{x:.3f}' for x in ratios)}")
        print(f"{tag} {label:10s} verdict: {verdict(ratios)}")
        if label == "wall-clock":
            ratio = statistics.median(ratios)
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
    )
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--rounds", type=int, default=7, help="alternating rounds (default 7)")
    parser.add_argument("--iters", type=int, default=2, help="timed steps per model per round")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per model first")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--batch", type=int, default=BATCH, help=f"default {BATCH}")
    parser.add_argument("--resolution", type=int, default=RESOLUTION, help=f"default {RESOLUTION}")
    args = parser.parse_args()
    for key in ("rounds", "iters", "batch", "resolution"):
        if getattr(args, key) < 1:
            parser.error(f"--{key}: {getattr(args, key)} is not allowed; it must be at least 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    name = (
        args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    )
    device = torch.device(name)
    stamp = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    print(f"{stamp}; torch {torch.__version__}; load average {_load()}")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        print(f"device: {torch.cuda.get_device_name(device)}")
    else:
        print(
            f"device: CPU {cpu_model()}, {_usable_cpus()} usable CPUs, "
            f"{torch.get_num_threads()} torch threads"
        )
    print(
        f"resnetrs50 training, {args.resolution} px, batch {args.batch}, channels_last, "
        f"{args.rounds} alternating rounds x {args.iters} steps after {args.warmup} warm-up steps"
    )
    compare(device, None, args)
    if device.type == "cuda":
        compare(device, torch.bfloat16, args)
    print(f"load average at the end {_load()}")


if __name__ == "__main__":
    main()
