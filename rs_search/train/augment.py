"""Per-image train and eval preprocessing of the ResNet-RS recipe, built from torchvision v2.

Training (official ``resnet_preprocessing.preprocess_for_train``, Bello et al. 2021 Sec. 4.2):
random-resized crop (area 0.08..1, aspect 3/4..4/3) -> bicubic resize -> horizontal flip ->
RandAugment -> normalize. Evaluation (``preprocess_for_eval``): a square centre crop of 0.875 of
the short side -> bicubic resize to the training resolution -> normalize.

RandAugment runs inside the dataset, once per image (:mod:`rs_search.train.randaugment`: the
official op set, levels and fill, magnitude unclamped, so M=15 trains differently from M=10): a
batched RandAugment would give every image of a batch the same ops (DESIGN.md section 5).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torchvision.transforms import InterpolationMode, v2
from torchvision.transforms.v2 import functional as F

__all__ = [
    "EVAL_CROP_FRACTION",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "AugmentPolicy",
    "CenterCropFraction",
    "eval_transform",
    "train_transform",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # official resnet_preprocessing MEAN_RGB / 255
IMAGENET_STD = (0.229, 0.224, 0.225)  # STDDEV_RGB / 255
EVAL_CROP_FRACTION = 0.875  # official CROP_PADDING 32 at 224: 224 / (224 + 32)


@dataclass(frozen=True, kw_only=True)
class AugmentPolicy:
    """What a data source needs from the augmentation beyond the recipe.

    ``crop_scale`` is the area range of the random-resized crop (the paper: 0.08..1 on ImageNet
    photographs); ``hflip`` is off for data whose mirror image is another class (digits);
    ``fill`` is the value of pixels that geometric RandAugment ops uncover and Cutout paints
    (official ``replace``: 128).
    ``mean``/``std`` normalize each channel (length 1 or ``channels``).
    """

    crop_scale: tuple[float, float] = (0.08, 1.0)
    hflip: bool = True
    fill: int = 128
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    def channel_stats(self, channels: int) -> tuple[list[float], list[float]]:
        """Mean and std repeated or averaged to ``channels`` entries."""

        def fit(values: tuple[float, ...]) -> list[float]:
            if len(values) == channels:
                return list(values)
            if len(values) == 1:
                return list(values) * channels
            return [sum(values) / len(values)] * channels  # RGB statistics for grayscale input

        return fit(self.mean), fit(self.std)


class CenterCropFraction(torch.nn.Module):
    """Square centre crop of ``fraction`` of the short side, then resize to ``size``.

    The official eval crop (``_decode_and_center_crop``): the crop size scales with the image,
    so it works for any input size, unlike a fixed-size ``CenterCrop``.
    """

    def __init__(self, size: int, fraction: float = EVAL_CROP_FRACTION) -> None:
        super().__init__()
        if not 0 < fraction <= 1:
            raise ValueError(f"crop fraction: {fraction} is out of range; allowed: 0 < f <= 1")
        self.size = size
        self.fraction = fraction

    def forward(self, image: Any) -> Any:
        height, width = F.get_size(image)
        side = max(1, round(min(height, width) * self.fraction))
        image = F.center_crop(image, [side, side])
        return F.resize(
            image, [self.size, self.size], interpolation=InterpolationMode.BICUBIC, antialias=True
        )


def _finish(channels: int, policy: AugmentPolicy) -> list[torch.nn.Module]:
    mean, std = policy.channel_stats(channels)
    # Plain tensors out: a tv_tensors.Image batch would route every op of the model's first
    # layer through __torch_function__.
    return [
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=mean, std=std),
        v2.ToPureTensor(),
    ]


def train_transform(
    *,
    resolution: int,
    channels: int,
    randaug_layers: int,
    randaug_magnitude: int,
    policy: AugmentPolicy,
) -> v2.Compose:
    """Per-image training transform: crop, flip, RandAugment, float, normalize.

    Input: a PIL image or a uint8 ``(C, H, W)`` tensor; output: float ``(channels, R, R)``.
    ``randaug_layers == 0`` disables RandAugment (RecipeSpec).
    """
    steps: list[torch.nn.Module] = [
        v2.ToImage(),
        v2.RandomResizedCrop(
            resolution,
            scale=policy.crop_scale,
            ratio=(3 / 4, 4 / 3),
            interpolation=InterpolationMode.BICUBIC,
            antialias=True,
        ),
    ]
    if policy.hflip:
        steps.append(v2.RandomHorizontalFlip())
    if randaug_layers > 0:
        # Imported here: timm's package import loads every model definition (seconds on a busy
        # machine), which only a run with RandAugment needs.
        from rs_search.train.randaugment import RandAugment

        steps.append(
            RandAugment(num_layers=randaug_layers, magnitude=randaug_magnitude, fill=policy.fill)
        )
    return v2.Compose(steps + _finish(channels, policy))


def eval_transform(
    *,
    resolution: int,
    channels: int,
    policy: AugmentPolicy,
    crop_fraction: float = EVAL_CROP_FRACTION,
) -> v2.Compose:
    """Per-image evaluation transform: centre crop of ``crop_fraction``, resize, normalize."""
    return v2.Compose(
        [v2.ToImage(), CenterCropFraction(resolution, crop_fraction), *_finish(channels, policy)]
    )
