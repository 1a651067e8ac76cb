"""Every size and count of the device check, for the GPU run and the CPU dry run.

The GPU figures are what issue 14 asks for (160 px, bf16, a batch that fills the GPU, ImageNet-
like JPEGs, latency at batch 1 and 128); the dry-run figures are the smallest that still run
every code path (tiny nets, 32 px, a handful of steps) on a 2-core CPU. Time per part is set in
``device_check.PARTS``; the times here are what a part spends inside that budget.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from rs_search.specs import ArchSpec

# The paper's ResNet-RS-50 at 160 px (the model timm's ``resnetrs50`` is, with 1000 classes).
RS50_160 = ArchSpec(layout=(3, 4, 6, 3), resolution=160)
TINY_32 = ArchSpec(layout=(1, 1, 1, 1), width=0.25, resolution=32, num_classes=10)


@dataclass(frozen=True, kw_only=True)
class Sizes:
    # -- training images/s, ours against timm
    ours: ArchSpec
    timm_model: str  # timm.create_model name, same class count as ``ours``
    max_batch: int  # the batch search starts here and halves on out-of-memory
    warmup_steps: int
    rounds: int  # alternating ours/timm rounds (fewer when the budget runs short)
    round_s: float  # target seconds of timed steps per model per round
    compile_backend: str  # inductor on CUDA; Dynamo alone (no code generation) on the CPU
    # -- the data path
    jpeg_count: int
    jpeg_classes: int
    jpeg_size: tuple[int, int]  # mean (width, height); each image varies by +-25%
    crop: int  # random-resized-crop output, px
    randaug: tuple[int, int]  # (layers, magnitude): the paper's RS-50 setting
    loader_workers: tuple[int, ...]
    loader_batch: int
    loader_s: float  # seconds of batches per configuration
    # -- latency and memory (one fresh process per figure)
    latency_arch: ArchSpec
    latency_batches: tuple[int, ...]
    latency_repeats: int  # processes per figure, round robin
    latency_protocol: dict[str, Any] | None  # None: the protocol the search uses, unchanged
    figure_timeout_s: float
    # -- the trainer's checks
    check_arch: ArchSpec  # sync-debug epoch and checkpoint RNG (synthetic data)
    check_batch: int
    micro_arch: ArchSpec
    micro: tuple[int, int]  # (batch, micro-batch)
    # -- search end to end
    search_classes: int
    search_train: int  # images per class
    search_val: int
    search_side: int  # JPEG side, px
    search_resolutions: tuple[int, ...]
    search_epochs: int
    search_target: dict[str, Any]


GPU = Sizes(
    ours=RS50_160,
    timm_model="resnetrs50",
    max_batch=4096,
    warmup_steps=3,
    rounds=5,
    round_s=1.5,
    compile_backend="inductor",
    jpeg_count=4000,
    jpeg_classes=10,
    jpeg_size=(400, 350),
    crop=160,
    randaug=(2, 10),
    loader_workers=(4, 8, 16),
    loader_batch=256,
    loader_s=8.0,
    latency_arch=RS50_160,
    latency_batches=(1, 128),
    latency_repeats=3,
    latency_protocol=None,
    figure_timeout_s=60.0,
    check_arch=ArchSpec(layout=(1, 1, 1, 1), width=0.5, resolution=64, num_classes=10),
    check_batch=32,
    micro_arch=RS50_160,
    micro=(256, 64),
    search_classes=4,
    search_train=48,
    search_val=12,
    search_side=96,
    search_resolutions=(32, 48),
    search_epochs=2,
    search_target={
        "name": "devcheck-cuda-bf16-b8",
        "device": "cuda",
        "batch_size": 8,
        "dtype": "bf16",
        "channels_last": True,
    },
)

DRY = Sizes(
    ours=TINY_32,
    timm_model="resnet10t",
    max_batch=4,
    warmup_steps=1,
    rounds=2,
    round_s=0.2,
    compile_backend="eager",
    jpeg_count=24,
    jpeg_classes=2,
    jpeg_size=(400, 350),
    crop=32,
    randaug=(2, 10),
    loader_workers=(0, 1),
    loader_batch=4,
    loader_s=1.0,
    # 64 px: at 32 px the last stage's maps are 1x1, and a training step at batch 1 cannot
    # normalise a single value per channel (BatchNorm raises; the latency module records it)
    latency_arch=replace(TINY_32, resolution=64),
    latency_batches=(1, 2),
    latency_repeats=1,
    latency_protocol={
        "warmup_iters": 1,
        "warmup_s": 0.02,
        "rep_s": 0.02,
        "min_iters": 2,
        "min_repeats": 2,
        "settle_repeats": 2,
        "min_time_s": 0.05,
        "max_repeats": 3,
        "busy_pause_s": 0.0,
    },
    figure_timeout_s=120.0,
    check_arch=ArchSpec(layout=(1, 1, 1, 1), width=0.25, resolution=16, num_classes=10),
    check_batch=64,
    micro_arch=TINY_32,
    micro=(8, 2),
    search_classes=2,
    search_train=8,
    search_val=4,
    search_side=24,
    search_resolutions=(8, 16),
    search_epochs=1,
    search_target={
        "name": "devcheck-cpu-fp32-b1",
        "device": "cpu",
        "batch_size": 1,
        "dtype": "fp32",
        "threads": 1,
    },
)


def sizes(dry_run: bool) -> Sizes:
    return DRY if dry_run else GPU
