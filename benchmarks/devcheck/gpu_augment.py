"""A GPU-side input path, measured by the ``datapath`` part when the CPU loader cannot keep up:
JPEG bytes read by loader processes, decoded on the device (``torchvision.io.decode_jpeg`` with
``device="cuda"``: nvJPEG), random-resized-cropped and flipped per image, and RandAugment applied
per image with the official op set and levels (:mod:`rs_search.train.randaugment`'s ``OPS``,
``op_argument``) but torchvision's tensor ops in place of PIL's.

Per image as the official code: every image draws its own ops (and signs, and Cutout's centre);
the images that drew the same op (and sign) are transformed together in one batched call, so a
batch costs at most ~25 calls per layer instead of one per image. torchvision's ops differ from
PIL's in small ways (rounding, the shear's centre is set to PIL's top-left corner); this path
measures what a device-side pipeline costs, it is not the training pipeline.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset
from torchvision.transforms import InterpolationMode, RandomResizedCrop
from torchvision.transforms.v2 import functional as F

from rs_search.train.randaugment import OPS, SIGNED_OPS, op_argument

__all__ = [
    "EncodedFiles",
    "apply_op_batched",
    "augment_batch",
    "collate_encoded",
    "randaugment_batch",
]


class EncodedFiles(Dataset[torch.Tensor]):
    """The bytes of each file as a uint8 tensor (what ``decode_jpeg`` takes)."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.frombuffer(bytearray(self.paths[index].read_bytes()), dtype=torch.uint8)


def collate_encoded(items: list[torch.Tensor]) -> list[torch.Tensor]:
    """Keep the encoded files as a list (their lengths differ)."""
    return items


def augment_batch(
    encoded: list[torch.Tensor],
    *,
    crop: int,
    layers: int,
    magnitude: float,
    device: torch.device,
    fill: int = 128,
    generator: torch.Generator | None = None,
    timings: dict[str, float] | None = None,
) -> torch.Tensor:
    """Decode, crop, flip and RandAugment a list of JPEG byte tensors on ``device``: uint8
    ``(N, 3, crop, crop)``. ``timings`` (CUDA only) gets each stage's seconds."""
    from torchvision.io import ImageReadMode, decode_jpeg

    clock = _StageClock(device, timings)
    images = decode_jpeg(encoded, mode=ImageReadMode.RGB, device=device)
    clock.mark("decode")
    crops = []
    for image in images:
        top, left, height, width = RandomResizedCrop.get_params(
            image, scale=[0.08, 1.0], ratio=[3 / 4, 4 / 3]
        )
        crops.append(
            F.resized_crop(
                image,
                top,
                left,
                height,
                width,
                [crop, crop],
                interpolation=InterpolationMode.BICUBIC,
                antialias=True,
            )
        )
    x = torch.stack(crops)
    flip = (torch.rand(len(crops), generator=generator) < 0.5).nonzero().flatten().to(device)
    x[flip] = x[flip].flip(-1)
    clock.mark("crop_flip")
    x = randaugment_batch(x, layers=layers, magnitude=magnitude, fill=fill, generator=generator)
    clock.mark("randaugment")
    return x


def randaugment_batch(
    x: torch.Tensor,
    *,
    layers: int,
    magnitude: float,
    fill: int = 128,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``layers`` ops per image drawn uniformly from the official 16 (signs at random for the
    signed ones), applied to the images that drew each op together. Draws on the CPU: choosing
    the groups needs no device synchronisation."""
    n = x.shape[0]
    for _ in range(layers):
        choice = torch.randint(len(OPS), (n,), generator=generator)
        negate = torch.rand(n, generator=generator) < 0.5
        out = x.clone()
        for k, name in enumerate(OPS):
            signs = (1, -1) if name in SIGNED_OPS else (1,)
            for sign in signs:
                chosen = choice == k
                if name in SIGNED_OPS:
                    chosen &= negate if sign < 0 else ~negate
                idx = chosen.nonzero().flatten()
                if idx.numel() == 0:
                    continue
                idx = idx.to(x.device)
                out[idx] = apply_op_batched(
                    x[idx], name, magnitude, sign=sign, fill=fill, generator=generator
                )
        x = out
    return x


def apply_op_batched(
    x: torch.Tensor,
    name: str,
    magnitude: float,
    *,
    sign: int = 1,
    fill: int = 128,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Official op ``name`` at ``magnitude`` on a uint8 ``(N, C, H, W)`` batch, all images with
    the same argument (``sign`` flips the signed ones); Cutout draws a centre per image."""
    height, width = x.shape[-2:]
    arg: Any = op_argument(name, magnitude, side=min(height, width))
    if arg is not None and name in SIGNED_OPS:
        arg = sign * arg
    fills = [float(fill)] * x.shape[1]
    nearest = InterpolationMode.NEAREST
    if name == "AutoContrast":
        return F.autocontrast(x)
    if name == "Equalize":
        return F.equalize(x)
    if name == "Invert":
        return F.invert(x)
    if name == "Rotate":
        return F.rotate(x, float(arg), interpolation=nearest, fill=fills)
    if name == "Posterize":
        return F.posterize(x, int(arg))
    if name == "Solarize":
        return x if arg > 255 else F.solarize(x, float(arg))  # at 256 nothing is inverted
    if name in ("Color", "Contrast", "Brightness", "Sharpness"):
        adjust = {
            "Color": F.adjust_saturation,
            "Contrast": F.adjust_contrast,
            "Brightness": F.adjust_brightness,
            "Sharpness": F.adjust_sharpness,
        }[name]
        return adjust(x, float(arg))
    if name in ("ShearX", "ShearY"):
        degrees = math.degrees(math.atan(float(arg)))
        shear = [degrees, 0.0] if name == "ShearX" else [0.0, degrees]
        return F.affine(
            x, angle=0.0, translate=[0, 0], scale=1.0, shear=shear, interpolation=nearest,
            fill=fills, center=[0.0, 0.0],
        )  # fmt: skip
    if name in ("TranslateX", "TranslateY"):
        pixels = int(round(float(arg)))
        shift = [pixels, 0] if name == "TranslateX" else [0, pixels]
        return F.affine(
            x, angle=0.0, translate=shift, scale=1.0, shear=[0.0, 0.0], interpolation=nearest,
            fill=fills,
        )  # fmt: skip
    if name == "Cutout":
        return _cutout(x, int(arg), fill, generator)
    if name == "SolarizeAdd":
        added = (x.to(torch.int16) + int(arg)).clamp(0, 255).to(torch.uint8)
        return torch.where(x < 128, added, x)
    raise ValueError(f"unknown RandAugment op {name!r}")


def _cutout(
    x: torch.Tensor, pad: int, fill: int, generator: torch.Generator | None
) -> torch.Tensor:
    """A (2 pad)-square per image, centred uniformly, clipped at the borders (official cutout)."""
    n, _, height, width = x.shape
    cy = torch.randint(height, (n, 1, 1, 1), generator=generator).to(x.device)
    cx = torch.randint(width, (n, 1, 1, 1), generator=generator).to(x.device)
    rows = torch.arange(height, device=x.device).view(1, 1, -1, 1)
    cols = torch.arange(width, device=x.device).view(1, 1, 1, -1)
    inside = (rows >= cy - pad) & (rows < cy + pad) & (cols >= cx - pad) & (cols < cx + pad)
    return torch.where(inside, torch.full_like(x, fill), x)


class _StageClock:
    def __init__(self, device: torch.device, timings: dict[str, float] | None) -> None:
        import time

        self.time = time.perf_counter
        self.timings = timings if device.type == "cuda" else None
        self.device = device
        self.last = self.time()

    def mark(self, stage: str) -> None:
        if self.timings is None:
            return
        torch.cuda.synchronize(self.device)
        now = self.time()
        self.timings[stage] = self.timings.get(stage, 0.0) + now - self.last
        self.last = now
