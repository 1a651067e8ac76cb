"""RandAugment as the official ResNet-RS code applies it, one image at a time.

The official code is tensorflow/tpu ``models/official/efficientnet/autoaugment.py``
(``distort_image_with_randaugment``, which ``resnet_preprocessing.preprocess_for_train`` calls
for every ResNet-RS config). Per layer it picks one of 16 ops uniformly (``available_ops``) and
always applies it (the ``prob`` it draws is unused on this path). The op's argument comes from
``level_to_arg`` at level = magnitude, on the scale ``_MAX_LEVEL = 10`` *without a clamp*: M=15
rotates by up to 45 degrees, blends enhance ops with factor 2.8, adds 165 in SolarizeAdd. Geometric
ops and Cutout fill uncovered pixels with ``replace`` (128, :attr:`AugmentPolicy.fill`) and
resample nearest-neighbour (``tf.contrib.image`` default ``interpolation="NEAREST"``).

timm (``timm/data/auto_augment.py``) is the field's port of that file; its PIL op functions
(``NAME_TO_OP``) and its ``LEVEL_TO_ARG`` entries for Posterize and the four enhance ops are the
official ones, so they are used here. What timm's ``RandAugment`` does differently, and this module
therefore writes itself:

* op set: timm's ``_RAND_TRANSFORMS`` has 15 ops, translates by a fraction of the image
  (``TranslateXRel``, 0.45 at level 10) and has no Cutout (timm does random erasing instead);
* magnitude: timm clamps it to ``magnitude_max`` (default ``_LEVEL_DENOM`` = 10), so M=15 would
  train as M=10; the official code does not clamp;
* probability: timm applies a chosen op with p = 0.5 by default; the official code always does;
* levels: timm caps SolarizeAdd at 128 and Solarize at 256; the official ``int(level/10 * 110)``
  and ``int(level/10 * 256)`` are kept (at 256 and above Solarize changes nothing either way);
* randomness: timm draws op choices, signs and interpolation from numpy and Python's ``random``;
  here every draw comes from torch's default generator, which the loader seeds per image
  (:class:`rs_search.train.loader.SeededItems`), so an image is augmented the same way in any
  process and on resume.

Documented choices where the official code cannot be followed literally:

* **Pixel constants scale with the image** (project choice). ``translate_const = 100`` and
  ``cutout_const = 40`` are pixels of the 224-px input they were set for (``IMAGE_SIZE = 224`` of
  ``resnet_preprocessing.py``, the RandAugment paper's ImageNet setting); the official code uses
  them unscaled at every resolution (100 px is 62% of a 160-px image). Here they are multiplied
  by ``side / 224`` (side: the shorter side of the image RandAugment sees), so at 224 px they are
  the official values and every resolution shifts and cuts out the same fraction of the image.
* **Contrast blends toward the mean grey level** (PIL's ``ImageEnhance.Contrast``, timm). The
  official ``contrast`` blends toward ``sum(histogram) / 256``, the pixel count over 256, not the
  mean, which would make the op depend on the image size.
* **Channels other than three** (grayscale digits, ``in_channels: 1``) are augmented plane by
  plane with the same op and arguments; Color has nothing to desaturate there and is a no-op.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import numpy as np
import torch
from PIL import Image
from timm.data import auto_augment as timm_aa
from torchvision import tv_tensors

__all__ = [
    "CUTOUT_CONST",
    "MAX_LEVEL",
    "OPS",
    "REFERENCE_SIZE",
    "SIGNED_OPS",
    "TRANSLATE_CONST",
    "RandAugment",
    "apply_op",
    "op_argument",
]

# tensorflow/tpu models/official/efficientnet/autoaugment.py
MAX_LEVEL = 10.0  # _MAX_LEVEL
OPS: tuple[str, ...] = (  # distort_image_with_randaugment: available_ops, in its order
    "AutoContrast",
    "Equalize",
    "Invert",
    "Rotate",
    "Posterize",
    "Solarize",
    "Color",
    "Contrast",
    "Brightness",
    "Sharpness",
    "ShearX",
    "ShearY",
    "TranslateX",
    "TranslateY",
    "Cutout",
    "SolarizeAdd",
)
SIGNED_OPS = frozenset({"Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY"})
"""Ops whose argument ``_randomly_negate_tensor`` flips with probability 0.5."""
TRANSLATE_CONST = 100.0  # distort_image_with_randaugment: augmentation_hparams.translate_const
CUTOUT_CONST = 40.0  # augmentation_hparams.cutout_const
REFERENCE_SIZE = 224  # the input size those two pixel constants are for (resnet_preprocessing)

Level = Callable[[float, int], float | int]


def _timm_level(name: str) -> Level:
    """timm's level function for ``name`` (its signature takes hparams, which these ignore)."""

    timm_level = timm_aa.LEVEL_TO_ARG[name]
    assert timm_level is not None, name

    def level(magnitude: float, side: int) -> float | int:
        value: float | int = timm_level(magnitude, {})[0]
        return value

    return level


# The official ``level_to_arg`` without the random sign (drawn in :func:`apply_op`). ``side`` is
# the image's shorter side, for the two pixel constants.
_LEVELS: dict[str, Level | None] = {
    "AutoContrast": None,
    "Equalize": None,
    "Invert": None,
    "Rotate": lambda m, side: m / MAX_LEVEL * 30.0,  # _rotate_level_to_arg
    "Posterize": _timm_level("Posterize"),  # int(level/10 * 4) bits kept
    "Solarize": lambda m, side: int(m / MAX_LEVEL * 256),
    "Color": _timm_level("Color"),  # _enhance_level_to_arg: level/10 * 1.8 + 0.1
    "Contrast": _timm_level("Contrast"),
    "Brightness": _timm_level("Brightness"),
    "Sharpness": _timm_level("Sharpness"),
    "ShearX": lambda m, side: m / MAX_LEVEL * 0.3,  # _shear_level_to_arg
    "ShearY": lambda m, side: m / MAX_LEVEL * 0.3,
    # _translate_level_to_arg, translate_const scaled to the image (module docstring)
    "TranslateX": lambda m, side: m / MAX_LEVEL * (TRANSLATE_CONST * side / REFERENCE_SIZE),
    "TranslateY": lambda m, side: m / MAX_LEVEL * (TRANSLATE_CONST * side / REFERENCE_SIZE),
    "Cutout": lambda m, side: int(m / MAX_LEVEL * (CUTOUT_CONST * side / REFERENCE_SIZE)),
    "SolarizeAdd": lambda m, side: int(m / MAX_LEVEL * 110),  # threshold 128 (solarize_add)
}


def op_argument(name: str, magnitude: float, *, side: int = REFERENCE_SIZE) -> float | int | None:
    """The argument op ``name`` gets at ``magnitude`` on an image whose shorter side is ``side``
    pixels, before the random sign of :data:`SIGNED_OPS`; None for ops without one.

    Degrees for Rotate, shear factor for ShearX/Y, pixels for TranslateX/Y, half the side of the
    square for Cutout, bits kept for Posterize, threshold for Solarize, the amount added below 128
    for SolarizeAdd, the blend factor for Color/Contrast/Brightness/Sharpness (1 = unchanged).
    """
    if name not in _LEVELS:
        raise ValueError(f"RandAugment op {name!r} is unknown; allowed: {', '.join(OPS)}")
    if magnitude < 0:
        raise ValueError(f"randaug_magnitude: {magnitude:g} must be >= 0")
    level = _LEVELS[name]
    return None if level is None else level(magnitude, side)


def apply_op(image: torch.Tensor, name: str, magnitude: float, *, fill: int) -> torch.Tensor:
    """Apply op ``name`` at ``magnitude`` to a uint8 ``(C, H, W)`` image, drawing its sign (and
    Cutout's centre) from torch's default generator. Returns a new uint8 tensor of the same shape.
    """
    height, width = image.shape[-2:]
    arg = op_argument(name, magnitude, side=min(height, width))
    if name in SIGNED_OPS and bool(torch.rand(()) < 0.5):
        arg = -arg  # type: ignore[operator]  # signed ops always have an argument
    if name == "Cutout":
        return _cutout(image, int(arg or 0), fill)
    return _pil_op(image, name, arg, fill)


def _cutout(image: torch.Tensor, pad: int, fill: int) -> torch.Tensor:
    """Official ``cutout``: a (2 pad)-square, clipped at the borders, centred uniformly."""
    height, width = image.shape[-2:]
    cy = int(torch.randint(height, ()))
    cx = int(torch.randint(width, ()))
    out = image.clone()
    out[:, max(0, cy - pad) : min(height, cy + pad), max(0, cx - pad) : min(width, cx + pad)] = fill
    return out


def _pil_op(image: torch.Tensor, name: str, arg: float | int | None, fill: int) -> torch.Tensor:
    """timm's PIL op on an RGB image, or on each plane of any other channel count."""
    op = cast(Callable[..., Image.Image], timm_aa.NAME_TO_OP[name])
    args = () if arg is None else (arg,)
    kwargs: dict[str, Any] = {"resample": Image.Resampling.NEAREST}
    array = image.numpy()
    if array.shape[0] == 3:
        rgb = Image.fromarray(np.ascontiguousarray(array.transpose(1, 2, 0)))
        out = np.asarray(op(rgb, *args, fillcolor=(fill,) * 3, **kwargs)).transpose(2, 0, 1)
    else:
        planes = [Image.fromarray(np.ascontiguousarray(plane)) for plane in array]
        out = np.stack([np.asarray(op(p, *args, fillcolor=fill, **kwargs)) for p in planes])
    return torch.from_numpy(np.ascontiguousarray(out))


class RandAugment(torch.nn.Module):
    """``num_layers`` ops drawn uniformly from the official 16 (with repeats), each applied at
    ``magnitude`` (the paper's M: 10 for the small ResNet-RS models, 15 for the rest).

    Input: a uint8 ``(C, H, W)`` tensor or ``tv_tensors.Image``; output: the same type, dtype
    and shape. Draws from torch's default generator: seed it for a reproducible image.
    """

    def __init__(self, *, num_layers: int, magnitude: float, fill: int = 128) -> None:
        super().__init__()
        if num_layers < 0:
            raise ValueError(f"randaug_layers: {num_layers} must be >= 0")
        if magnitude < 0:
            raise ValueError(f"randaug_magnitude: {magnitude:g} must be >= 0")
        if not 0 <= fill <= 255:
            raise ValueError(f"RandAugment fill: {fill} is out of range; allowed: 0..255")
        self.num_layers = num_layers
        self.magnitude = magnitude
        self.fill = fill

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if image.dtype != torch.uint8 or image.ndim != 3:
            raise ValueError(
                f"RandAugment takes a uint8 (C, H, W) image, got {image.dtype} "
                f"of shape {tuple(image.shape)}"
            )
        out = image.as_subclass(torch.Tensor)
        for _ in range(self.num_layers):
            name = OPS[int(torch.randint(len(OPS), ()))]
            out = apply_op(out, name, self.magnitude, fill=self.fill)
        if isinstance(image, tv_tensors.TVTensor):
            return tv_tensors.wrap(out, like=image)
        return out

    def extra_repr(self) -> str:
        return f"num_layers={self.num_layers}, magnitude={self.magnitude:g}, fill={self.fill}"
