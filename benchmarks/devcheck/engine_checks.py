"""Part ``checks``: what the training engine's CUDA paths must do, which no CPU test can show
(asked for by the engine's owner, issue 14 item 5).

- ``sync_debug_epoch``: one real epoch (``rs_search.train.train`` on synthetic data, EMA on)
  under ``torch.cuda.set_sync_debug_mode("warn")``; every warning's place is recorded. A step
  must not wait for the GPU: syncs are expected only at the periodic check (every
  ``check_every`` steps), the epoch's end and the evaluation, never inside ``_train_step``.
- ``uint8_normalize``: uint8 batches normalised on the device (``DeviceNormalize``) against the
  CPU's float path (the same transforms with float conversion and ``Normalize``): bit-equal.
- ``micro_batch_bf16``: ``accumulate_gradients`` of one batch whole and in micro-batches under
  bf16 autocast: peak memory (CUDA allocator) and how close loss and gradients are (BatchNorm
  normalises each micro-batch by its own statistics, so they differ a little by design).
- ``checkpoint_rng``: a run stopped mid-epoch saves the run's own device's CUDA RNG state in a
  real checkpoint; a Trainer resuming it restores exactly that state; the resumed run finishes.

On the CPU (``--dry-run``) the same code runs on the CPU where a CPU equivalent exists; what
needs CUDA is recorded as skipped with the reason.
"""

from __future__ import annotations

import copy
import traceback
import warnings
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

from devcheck.runner import PartContext, Recorder, Skip
from devcheck.sizes import Sizes, sizes

# Functions of the per-step path: a sync warning raised under any of them is a finding.
_PER_STEP = ("_train_step", "accumulate_gradients")


def _candidate(sz: Sizes, *, dropout: float, ema: float) -> Any:
    from rs_search.specs import Candidate, RecipeSpec

    recipe = RecipeSpec(
        epochs=2,
        batch_size=sz.check_batch,
        warmup_epochs=0,
        ema_decay=ema,
        dropout=dropout,
        randaug_layers=0,
    )
    return Candidate(arch=sz.check_arch, recipe=recipe)


def _sync_site(stack: list[traceback.FrameSummary]) -> tuple[str, bool]:
    """Where a sync happened (the innermost frame of rs_search) and whether a step did it."""
    ours = [f for f in stack if "rs_search" in f.filename.replace("\\", "/")]
    per_step = any(f.name in _PER_STEP for f in ours)
    if not ours:
        last = stack[-1] if stack else None
        return (f"{Path(last.filename).name}:{last.lineno} {last.name}" if last else "?"), False
    inner = ours[-1]
    where = inner.filename.replace("\\", "/").split("rs_search/", 1)[-1]
    return f"rs_search/{where}:{inner.lineno} {inner.name}", per_step


def sync_debug_epoch(ctx: PartContext, sz: Sizes, item: dict[str, Any]) -> None:
    import torch

    from rs_search.train import RunOptions, train

    if ctx.device != "cuda":
        raise Skip("torch.cuda.set_sync_debug_mode is CUDA-only")
    sites: Counter[str] = Counter()
    per_step: Counter[str] = Counter()

    def record(message: Any, category: Any, filename: str, lineno: int, *rest: Any) -> None:
        if "synchroniz" not in str(message):
            return
        site, in_step = _sync_site(traceback.extract_stack()[:-1])
        sites[site] += 1
        if in_step:
            per_step[site] += 1

    options = RunOptions(data="synthetic", device="cuda", progress=False, stop_at_epoch=1)
    candidate = _candidate(sz, dropout=0.25, ema=0.999)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = record
        torch.cuda.set_sync_debug_mode("warn")
        try:
            result = train(candidate, options)
        finally:
            torch.cuda.set_sync_debug_mode(0)
    steps = 1024 // sz.check_batch  # synthetic data: 1024 training images
    item.update(
        steps=steps,
        check_every=25,
        syncs=sum(sites.values()),
        sites=dict(sites.most_common()),
        per_step_syncs=sum(per_step.values()),
        per_step_sites=dict(per_step),
        expectation_met=not per_step,
        images_per_s=round(result.curve[-1].images_per_s, 1),
    )


def uint8_normalize(ctx: PartContext, sz: Sizes, item: dict[str, Any]) -> None:
    import torch

    from rs_search.train.augment import AugmentPolicy, train_transform
    from rs_search.train.data import uint8_output
    from rs_search.train.step import DeviceNormalize

    device = torch.device(ctx.device)
    policy = AugmentPolicy()
    mean, std = policy.channel_stats(3)
    normalize = DeviceNormalize(mean, std, device)

    def make() -> Any:
        return train_transform(
            resolution=64, channels=3, randaug_layers=2, randaug_magnitude=10, policy=policy
        )

    float_tf, uint8_tf = make(), uint8_output(make())
    source = torch.randint(0, 256, (3, 97, 83), dtype=torch.uint8, generator=torch.Generator())
    expected, raw = [], []
    for seed in range(16):  # the same crop, flip and RandAugment on both paths
        torch.manual_seed(seed)
        expected.append(float_tf(source))
        torch.manual_seed(seed)
        raw.append(uint8_tf(source))
    got = normalize(torch.stack(raw)).cpu()
    want = torch.stack(expected)
    item.update(
        device=str(device),
        images=len(raw),
        bit_equal=bool(torch.equal(got, want)),
        max_abs_diff=float((got - want).abs().max()),
        expectation_met=bool(torch.equal(got, want)),
    )
    if device.type != "cuda":
        item["note"] = "CPU equivalent: the CUDA comparison needs a GPU"


def micro_batch_bf16(ctx: PartContext, sz: Sizes, item: dict[str, Any]) -> None:
    import torch
    from torch import nn

    from rs_search.models import build_model
    from rs_search.train.step import RunningSums, accumulate_gradients

    device = torch.device(ctx.device)
    batch, micro = sz.micro
    torch.manual_seed(0)
    base = build_model(sz.micro_arch).train().to(device).to(memory_format=torch.channels_last)
    res = sz.micro_arch.resolution
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, res, res, generator=gen).to(device)
    images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, sz.micro_arch.num_classes, (batch,), generator=gen).to(device)
    criterion = nn.CrossEntropyLoss(label_smoothing=0.1)
    runs: dict[str, Any] = {}
    for name, size in (("whole", None), ("micro", micro)):
        model = copy.deepcopy(base)
        sums = RunningSums(device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        accumulate_gradients(
            model, images, labels, criterion=criterion, micro_batch=size, amp=torch.bfloat16,
            sums=sums,
        )  # fmt: skip
        host = sums.host()
        grads = torch.cat(
            [p.grad.flatten().float() for p in model.parameters() if p.grad is not None]
        )
        runs[name] = {
            "loss": float(host[0] / host[2]),
            "grads": grads,
            "peak_mb": torch.cuda.max_memory_allocated(device) / 2**20
            if device.type == "cuda"
            else None,
        }
        del model
    whole, part = runs["whole"], runs["micro"]
    cosine = torch.nn.functional.cosine_similarity(whole["grads"], part["grads"], dim=0)
    relative = (whole["grads"] - part["grads"]).norm() / whole["grads"].norm()
    item.update(
        batch=batch,
        micro_batch=micro,
        loss_whole=round(whole["loss"], 5),
        loss_micro=round(part["loss"], 5),
        loss_relative_diff=round(abs(whole["loss"] - part["loss"]) / abs(whole["loss"]), 5),
        grad_cosine=round(float(cosine), 5),
        grad_relative_diff=round(float(relative), 5),
    )
    if device.type == "cuda":
        item.update(
            peak_mb_whole=round(whole["peak_mb"], 1),
            peak_mb_micro=round(part["peak_mb"], 1),
            memory_ratio=round(part["peak_mb"] / whole["peak_mb"], 3),
            expectation_met=part["peak_mb"] < whole["peak_mb"] and float(cosine) > 0.9,
        )
    else:
        item["note"] = "peak memory from the CUDA allocator needs a GPU; losses and gradients only"


def checkpoint_rng(ctx: PartContext, sz: Sizes, item: dict[str, Any]) -> None:
    import torch

    from rs_search.errors import TrialInterrupted
    from rs_search.train import RunOptions, train
    from rs_search.train import checkpoint as ckpt
    from rs_search.train.distributed import DistContext
    from rs_search.train.trainer import Trainer

    device = torch.device(ctx.device)
    out = ctx.work / "checkpoint_rng"
    candidate = _candidate(sz, dropout=0.25, ema=0.0)  # dropout draws from the device's RNG
    calls = {"n": 0}
    saved: dict[str, Any] = {}

    def stop() -> bool:
        calls["n"] += 1
        if calls["n"] < 2:
            return False
        saved["cuda"] = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
        saved["cpu"] = torch.get_rng_state()
        return True

    options = RunOptions(
        data="synthetic",
        device=ctx.device,
        out_dir=out,
        progress=False,
        check_every=3,
        stop_at_epoch=1,
    )
    try:
        train(candidate, options, should_stop=stop)
        raise RuntimeError("the run was not interrupted by should_stop")
    except TrialInterrupted as exc:
        item["interrupted"] = str(exc)
    found = ckpt.load_latest(out)
    if found is None:
        raise RuntimeError(f"no checkpoint in {out}")
    rng = found.state["rng"]
    item["checkpoint"] = found.path.name
    item["saved_cpu_equal"] = bool(torch.equal(rng["torch"], saved["cpu"]))
    if device.type == "cuda":
        item["saved_cuda_equal"] = bool(torch.equal(rng["cuda_device"].cpu(), saved["cuda"].cpu()))
    trainer = Trainer(candidate, replace(options, resume=True), ctx=DistContext())
    try:
        if device.type == "cuda":
            now = torch.cuda.get_rng_state(device)
            item["restored_cuda_equal"] = bool(torch.equal(now.cpu(), saved["cuda"].cpu()))
        item["restored_cpu_equal"] = bool(torch.equal(torch.get_rng_state(), saved["cpu"]))
        item["resumed_at"] = {"epoch": trainer.epoch, "step": trainer.step}
        result = trainer.fit()
        item["finished_epochs"] = result.epochs_done
    finally:
        trainer.close()
    keys = [k for k in item if k.endswith("_equal")]
    item["expectation_met"] = all(item[k] for k in keys)
    if device.type != "cuda":
        item["note"] = "CPU equivalent: the CUDA RNG state needs a GPU"


CHECKS = {
    "sync_debug_epoch": sync_debug_epoch,
    "uint8_normalize": uint8_normalize,
    "micro_batch_bf16": micro_batch_bf16,
    "checkpoint_rng": checkpoint_rng,
}


def run(ctx: PartContext, rec: Recorder) -> None:
    sz = sizes(ctx.dry_run)
    for name, check in CHECKS.items():
        if ctx.left() < 5:
            rec.skip(name, "the part's budget ran short")
            continue
        with rec.item(name) as item:
            check(ctx, sz, item)
        if "expectation_met" in item:
            rec.put(name, item["expectation_met"])
