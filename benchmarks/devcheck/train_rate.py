"""Parts ``train_eager`` and ``train_compile``: training images/s of our ResNet-RS-50 against
timm's ``resnetrs50`` at 160 px, bf16 autocast, channels_last, at a batch that fills the GPU.

Both train with the same step (our SGD with no weight decay on BN/bias, label-smoothed loss,
dropout 0.25 before the classifier) on a fixed random batch: data loading is the ``datapath``
part's business. The batch is searched: it starts at ``Sizes.max_batch`` and halves on
out-of-memory until a step of each model fits; both then train at the smaller of the two.
Models alternate in rounds so that drifting clocks hit both alike; a round's figure is images/s
over ~``round_s`` seconds of steps between two device synchronisations; the part reports the
median over rounds with the range, and the ratio ours/timm per round.

TFLOP/s: the FLOPs of one training step (forward and backward) counted by
``torch.utils.flop_counter`` on the meta device for each model (convolutions and matrix
products, 2 per multiply-add), times images/s; as a fraction of the datasheet's dense bf16 peak
(:mod:`devcheck.machine`) and of the measured matrix-product rate.

``train_compile`` does the same under ``torch.compile`` (inductor on CUDA; on the CPU dry run
Dynamo alone, ``backend="eager"``: inductor's C++ build of even a tiny net took minutes there).
It compiles and times ours first, then timm, then alternates, so a deadline during timm's
compilation still leaves ours measured.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from typing import Any

from devcheck.runner import PartContext, Recorder, is_oom
from devcheck.sizes import Sizes, sizes

MODELS = ("ours", "timm")


def build(name: str, sz: Sizes) -> Any:
    """A fresh model in train mode: ours from the ArchSpec, timm's by name."""
    if name == "ours":
        from rs_search.models import build_model

        return build_model(sz.ours, dropout=0.25)
    import timm

    return timm.create_model(sz.timm_model, drop_rate=0.25, num_classes=sz.ours.num_classes)


def train_flops_per_image(name: str, sz: Sizes) -> int:
    """FLOPs of one image's forward and backward pass, counted on the meta device."""
    import torch
    from torch.nn import functional as F
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = build(name, sz).train()
        res = sz.ours.resolution
        images = torch.randn(2, 3, res, res)
        labels = torch.randint(0, sz.ours.num_classes, (2,))
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(images), labels).backward()
    return int(counter.get_total_flops() // 2)


class TrainStep:
    """One SGD step of ``model`` on a fixed random batch, bf16 autocast, channels_last."""

    def __init__(self, model: Any, batch: int, sz: Sizes, device: Any) -> None:
        import torch

        from rs_search.specs import RecipeSpec
        from rs_search.train.recipe import build_criterion, build_optimizer

        recipe = RecipeSpec(batch_size=batch)
        self.model = model
        self.optimizer = build_optimizer(model, recipe)
        self.criterion = build_criterion(recipe)
        res = sz.ours.resolution
        gen = torch.Generator().manual_seed(0)
        self.images = (
            torch.randn(batch, 3, res, res, generator=gen)
            .to(device)
            .contiguous(memory_format=torch.channels_last)
        )
        self.labels = torch.randint(0, sz.ours.num_classes, (batch,), generator=gen).to(device)
        self.device = device
        self.batch = batch

    def __call__(self) -> None:
        import torch

        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, dtype=torch.bfloat16):
            logits = self.model(self.images)
        self.criterion(logits.float(), self.labels).backward()
        self.optimizer.step()


def sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free(device: Any) -> None:
    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def fit_batch(try_batch: Callable[[int], None], start: int) -> tuple[int | None, list[int]]:
    """The largest of ``start, start/2, ...`` for which ``try_batch`` runs without running out of
    memory (any other error propagates), and the batches that did not fit."""
    too_big: list[int] = []
    batch = start
    while batch >= 1:
        failed = False
        try:
            try_batch(batch)
        except Exception as exc:
            if not is_oom(exc):
                raise
            failed = True
        if not failed:
            return batch, too_big
        too_big.append(batch)  # freed after the except block: its traceback held the tensors
        batch //= 2
    return None, too_big


def _search_batch(ctx: PartContext, rec: Recorder, sz: Sizes, device: Any) -> int:
    import torch

    with rec.item("batch_search") as item:
        fits: dict[str, int | None] = {}
        for name in MODELS:
            model = build(name, sz).to(device).to(memory_format=torch.channels_last)

            def attempt(batch: int, model: Any = model) -> None:
                step = TrainStep(model, batch, sz, device)
                try:
                    for _ in range(2):  # the second step holds the momentum buffers too
                        step()
                    sync(device)
                finally:
                    del step
                    free(device)

            fits[name], too_big = fit_batch(attempt, sz.max_batch)
            item[f"{name}_too_big"] = too_big
            ctx.log(f"{name}: batch {fits[name]} fits (out of memory at {too_big or 'none'})")
            del model
            free(device)
        item["fits"] = fits
        if any(v is None for v in fits.values()):
            raise RuntimeError(f"no batch fits: {fits}")
        batch = min(v for v in fits.values() if v is not None)
        item["batch"] = batch
    if item["status"] != "ok":
        raise RuntimeError(f"batch search {item['status']}: {item.get('reason')}")
    rec.put("batch", batch)
    rec.put("batch_from", "searched in this part")
    return int(batch)


def _round(step: TrainStep, seconds: float, device: Any) -> tuple[float, int]:
    """Images/s over steps until about ``seconds`` passed (at least 2 steps)."""
    sync(device)
    start = time.perf_counter()
    steps = 0
    while steps < 2 or time.perf_counter() - start < seconds:
        step()
        steps += 1
        if steps % 4 == 0:  # read the clock on settled work, without a sync every step
            sync(device)
    sync(device)
    return step.batch * steps / (time.perf_counter() - start), steps


def run(ctx: PartContext, rec: Recorder) -> None:
    import torch

    compiled = bool(ctx.options.get("compiled"))
    sz = sizes(ctx.dry_run)
    device = torch.device(ctx.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    rec.put("resolution", sz.ours.resolution)
    rec.put("models", {"ours": sz.ours.to_dict(), "timm": sz.timm_model})
    rec.put("compile_backend", sz.compile_backend if compiled else None)
    flops: dict[str, int] = {}
    with rec.item("flops") as item:
        flops = {name: train_flops_per_image(name, sz) for name in MODELS}
        item.update({f"{k}_gflop_per_image": v / 1e9 for k, v in flops.items()})
        rec.put("train_gflop_per_image", {k: v / 1e9 for k, v in flops.items()})
    earlier = ctx.earlier("train_eager", "batch") if compiled else None
    if earlier:
        batch = int(earlier)
        rec.put("batch", batch)
        rec.put("batch_from", "train_eager's search")
    else:
        batch = _search_batch(ctx, rec, sz, device)
    steps: dict[str, TrainStep] = {}
    rates: dict[str, list[float]] = {name: [] for name in MODELS}
    for _attempt in range(3):  # both models resident (and compiled) may need a smaller batch
        steps, rates = _warm_up(ctx, rec, sz, device, batch, compiled, flops)
        if not any(rec.data["items"][f"warmup_{n}"]["status"] == "oom" for n in MODELS):
            break
        steps.clear()
        free(device)
        batch //= 2
        rec.put("batch", batch)
        rec.put("batch_from", f"halved to {batch} after running out of memory in the warm-up")
    if set(steps) != set(MODELS):
        raise RuntimeError(f"only {sorted(steps)} could be set up; no comparison")
    with rec.item("rounds") as item:
        per_round = 2 * sz.round_s * 1.2 + 1
        for r in range(sz.rounds - 1):
            if ctx.left() < per_round:
                item["stopped_early"] = f"after {r + 1} rounds: the part's budget ran short"
                break
            order = MODELS if r % 2 else tuple(reversed(MODELS))
            for name in order:
                rates[name].append(_round(steps[name], sz.round_s, device)[0])
            _publish(rec, rates, flops, ctx)
        item["rounds"] = len(rates["ours"])
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
        total = torch.cuda.get_device_properties(device).total_memory
        rec.put("memory_used_fraction", round(peak / total, 3))


def _warm_up(
    ctx: PartContext,
    rec: Recorder,
    sz: Sizes,
    device: Any,
    batch: int,
    compiled: bool,
    flops: dict[str, int],
) -> tuple[dict[str, TrainStep], dict[str, list[float]]]:
    """Build (and compile) each model, warm it up, time one round of it alone."""
    import torch

    steps: dict[str, TrainStep] = {}
    rates: dict[str, list[float]] = {name: [] for name in MODELS}
    for name in MODELS:
        with rec.item(f"warmup_{name}") as item:
            item["batch"] = batch
            model = build(name, sz).to(device).to(memory_format=torch.channels_last)
            if compiled:
                model = torch.compile(model, backend=sz.compile_backend)
            steps[name] = TrainStep(model, batch, sz, device)
            start = time.perf_counter()
            for _ in range(sz.warmup_steps):
                steps[name]()
            sync(device)
            item["warmup_s"] = round(time.perf_counter() - start, 2)
            rate, _ = _round(steps[name], sz.round_s, device)
            rates[name].append(rate)
            _publish(rec, rates, flops, ctx)
    return steps, rates


def _publish(
    rec: Recorder, rates: dict[str, list[float]], flops: dict[str, int], ctx: PartContext
) -> None:
    """Medians, ranges, ratio and TFLOP/s of the rounds so far (a deadline keeps them)."""
    summary: dict[str, Any] = {"rounds": {k: [round(v, 1) for v in vs] for k, vs in rates.items()}}
    peak = (ctx.earlier("machine", "machine") or {}).get("peak_bf16_tflops")
    matmul = ctx.earlier("machine", "matmul_tflops")
    for name, values in rates.items():
        if not values:
            continue
        med = statistics.median(values)
        tflops = med * flops[name] / 1e12 if name in flops else None
        summary[name] = {
            "images_per_s": round(med, 1),
            "min": round(min(values), 1),
            "max": round(max(values), 1),
            "tflops": round(tflops, 2) if tflops is not None else None,
            "fraction_of_peak": round(tflops / peak, 4) if peak and tflops else None,
            "fraction_of_matmul": round(tflops / matmul, 4) if matmul and tflops else None,
        }
    pairs = [o / t for o, t in zip(rates["ours"], rates["timm"], strict=False)]
    if pairs:
        summary["ratio"] = {
            "median": round(statistics.median(pairs), 4),
            "min": round(min(pairs), 4),
            "max": round(max(pairs), 4),
            "of_medians": round(
                summary["ours"]["images_per_s"] / summary["timm"]["images_per_s"], 4
            ),
        }
    rec.put("rates", summary)
    line = ", ".join(f"{k} {summary[k]['images_per_s']:.0f} img/s" for k in MODELS if k in summary)
    if "ratio" in summary:
        line += f", ours/timm {summary['ratio']['median']:.3f}"
    ctx.log(line)
