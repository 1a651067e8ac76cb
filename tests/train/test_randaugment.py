"""RandAugment against the official code: tensorflow/tpu
``models/official/efficientnet/autoaugment.py`` (``distort_image_with_randaugment``,
``level_to_arg``, ``_MAX_LEVEL = 10.``, ``cutout_const=40``, ``translate_const=100``)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torchvision import tv_tensors

from rs_search.space import load_space
from rs_search.train.augment import AugmentPolicy, train_transform
from rs_search.train.data import build_data
from rs_search.train.distributed import DistContext
from rs_search.train.loader import build_loaders
from rs_search.train.randaugment import OPS, SIGNED_OPS, RandAugment, apply_op, op_argument

SPACES = Path(__file__).resolve().parents[2] / "spaces"

# Each op's argument at M = 5, 10, 15 on a 224-px image, worked out by hand from the official
# formulas (autoaugment.py, level = M, _MAX_LEVEL = 10, no clamp):
#   Rotate       _rotate_level_to_arg       level/10 * 30            (then a random sign)
#   Posterize    level_to_arg 'Posterize'   int(level/10 * 4)
#   Solarize     level_to_arg 'Solarize'    int(level/10 * 256)
#   SolarizeAdd  level_to_arg 'SolarizeAdd' int(level/10 * 110)
#   Color, Contrast, Brightness, Sharpness  _enhance_level_to_arg   level/10 * 1.8 + 0.1
#   ShearX/Y     _shear_level_to_arg        level/10 * 0.3           (then a random sign)
#   TranslateX/Y _translate_level_to_arg    level/10 * translate_const (100; random sign)
#   Cutout       level_to_arg 'Cutout'      int(level/10 * cutout_const) (40)
#   AutoContrast, Equalize, Invert          lambda level: ()
OFFICIAL_AT_224: dict[str, tuple[float | int | None, ...]] = {
    "AutoContrast": (None, None, None),
    "Equalize": (None, None, None),
    "Invert": (None, None, None),
    "Rotate": (15.0, 30.0, 45.0),
    "Posterize": (2, 4, 6),
    "Solarize": (128, 256, 384),
    "Color": (1.0, 1.9, 2.8),
    "Contrast": (1.0, 1.9, 2.8),
    "Brightness": (1.0, 1.9, 2.8),
    "Sharpness": (1.0, 1.9, 2.8),
    "ShearX": (0.15, 0.3, 0.45),
    "ShearY": (0.15, 0.3, 0.45),
    "TranslateX": (50.0, 100.0, 150.0),
    "TranslateY": (50.0, 100.0, 150.0),
    "Cutout": (20, 40, 60),
    "SolarizeAdd": (55, 110, 165),
}


def _image(channels: int, side: int = 32, seed: int = 0) -> torch.Tensor:
    # Values 1..254 except 128, so the fill value (128) only appears where an op put it.
    gen = torch.Generator().manual_seed(seed)
    image = torch.randint(1, 255, (channels, side, side), dtype=torch.uint8, generator=gen)
    image[image == 128] = 127
    return image


def test_op_set_is_the_official_sixteen() -> None:
    """distort_image_with_randaugment's available_ops, in order: Invert, Cutout and SolarizeAdd
    are in, Identity is not."""
    assert OPS == tuple(OFFICIAL_AT_224)
    assert len(OPS) == 16 and "Identity" not in OPS
    assert SIGNED_OPS == {"Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY"}


@pytest.mark.parametrize("name", list(OFFICIAL_AT_224))
def test_each_ops_argument_follows_the_official_formula(name: str) -> None:
    got = tuple(op_argument(name, m, side=224) for m in (5, 10, 15))
    expected = OFFICIAL_AT_224[name]
    if expected[0] is None:
        assert got == expected
        return
    assert got == pytest.approx(expected)
    assert all(type(g) is type(e) for g, e in zip(got, expected, strict=True)), got


@pytest.mark.parametrize(
    ("side", "translate", "cutout"),
    [(224, 100.0, 40), (112, 50.0, 20), (448, 200.0, 80), (32, 100 * 32 / 224, 5)],
)
def test_pixel_constants_scale_with_the_image(side: int, translate: float, cutout: int) -> None:
    """Project choice: translate_const and cutout_const are pixels at 224 px, scaled to the side."""
    assert op_argument("TranslateX", 10, side=side) == pytest.approx(translate)
    assert op_argument("Cutout", 10, side=side) == cutout
    assert op_argument("Rotate", 10, side=side) == 30.0  # angles and factors do not scale


@pytest.mark.parametrize("channels", [1, 3])
def test_magnitude_15_differs_from_10_for_every_op_it_reaches(channels: int) -> None:
    image = _image(channels)
    differ = set()
    for name in OPS:
        torch.manual_seed(3)
        at_10 = apply_op(image, name, 10, fill=128)
        torch.manual_seed(3)
        at_15 = apply_op(image, name, 15, fill=128)
        if not torch.equal(at_10, at_15):
            differ.add(name)
    same = {"AutoContrast", "Equalize", "Invert", "Solarize"}  # no level; threshold >= 256
    if channels == 1:
        same.add("Color")  # nothing to desaturate in one plane
    assert differ == set(OPS) - same


def test_magnitude_15_and_10_give_different_images_through_the_transform() -> None:
    image = _image(3, side=40)
    common = {"resolution": 32, "channels": 3, "randaug_layers": 2, "policy": AugmentPolicy()}
    at_10 = train_transform(randaug_magnitude=10, **common)
    at_15 = train_transform(randaug_magnitude=15, **common)
    differ = 0
    for seed in range(8):
        torch.manual_seed(seed)
        a = at_10(image)
        torch.manual_seed(seed)
        b = at_15(image)
        differ += not torch.equal(a, b)
    # A seed whose two ops are both among the four without a level gives equal images: 1 in 16.
    assert differ >= 6


def test_ops_do_what_their_argument_says() -> None:
    flat = torch.full((1, 224, 224), 50, dtype=torch.uint8)
    flat[:, :, 112:] = 200  # above SolarizeAdd's threshold of 128: left alone
    out = apply_op(flat, "SolarizeAdd", 15, fill=128)
    assert set(out[:, :, :112].unique().tolist()) == {50 + 165}
    assert set(out[:, :, 112:].unique().tolist()) == {200}
    assert set(apply_op(flat, "Posterize", 5, fill=128).unique().tolist()) <= {0, 64, 128, 192}
    brighter = apply_op(torch.full((3, 8, 8), 100, dtype=torch.uint8), "Brightness", 10, fill=0)
    assert set(brighter.unique().tolist()) == {190}  # factor 1.9
    for name in ("Color", "Contrast", "Brightness", "Sharpness"):  # factor 1.0 at M=5
        image = _image(3)
        assert torch.equal(apply_op(image, name, 5, fill=128), image), name


@pytest.mark.parametrize(("side", "shift"), [(224, 100), (112, 50)])
def test_translate_moves_by_the_scaled_pixels_and_fills_128(side: int, shift: int) -> None:
    image = _image(3, side=side)
    for seed in range(4):  # both signs
        torch.manual_seed(seed)
        out = apply_op(image, "TranslateX", 10, fill=128)
        filled = (out == 128).all(dim=0).all(dim=0)  # whole columns of fill
        assert int(filled.sum()) == shift
        kept = ~filled
        moved = out[:, :, kept]
        if bool(filled[-1]):  # content moved left: output x shows input x + shift
            assert torch.equal(moved, image[:, :, shift:])
        else:
            assert torch.equal(moved, image[:, :, : side - shift])


def test_cutout_paints_a_square_of_twice_the_level_clipped_at_the_borders() -> None:
    image = _image(1, side=224)
    sides = []
    for seed in range(12):
        torch.manual_seed(seed)
        mask = apply_op(image, "Cutout", 10, fill=128)[0] == 128
        rows, cols = mask.any(dim=1).nonzero(), mask.any(dim=0).nonzero()
        height, width = len(rows), len(cols)
        assert int(mask.sum()) == height * width  # one solid rectangle
        assert height <= 80 and width <= 80
        sides.append((height, width))
    assert (80, 80) in sides  # an interior centre gives the full 2 x 40 square


@pytest.mark.parametrize("channels", [1, 3])
def test_randaugment_keeps_dtype_shape_type_and_is_seeded(channels: int) -> None:
    image = _image(channels)
    augment = RandAugment(num_layers=2, magnitude=15, fill=128)
    outs = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        outs.append(augment(tv_tensors.Image(image)))
    assert all(type(o) is tv_tensors.Image for o in outs)
    assert all(o.dtype == torch.uint8 and o.shape == image.shape for o in outs)
    assert torch.equal(outs[0], outs[1]) and not torch.equal(outs[0], outs[2])
    plain = augment(image)
    assert type(plain) is torch.Tensor and plain.dtype == torch.uint8
    assert torch.equal(image, _image(channels))  # the input is not modified in place


def test_randaugment_rejects_what_it_cannot_augment() -> None:
    with pytest.raises(ValueError, match="uint8"):
        RandAugment(num_layers=2, magnitude=10)(torch.rand(3, 8, 8))
    with pytest.raises(ValueError, match="randaug_magnitude: -1 must be >= 0"):
        RandAugment(num_layers=2, magnitude=-1)
    with pytest.raises(ValueError, match="unknown; allowed: AutoContrast"):
        op_argument("Identity", 10)


def test_resnet_rs_space_magnitude_changes_the_training_batches() -> None:
    """Two candidates of spaces/resnet_rs.yaml differing only in RandAugment magnitude train on
    different batches through the engine's data path (build_data, build_loaders' seeded items).
    digits (10 classes) stands in for ImageNet, at the space's smallest resolution."""
    space = load_space(SPACES / "resnet_rs.yaml")
    magnitudes = space.param("recipe.randaug_magnitude").domain.values()
    assert magnitudes is not None and {10, 15} <= set(magnitudes)
    seed = next(s for s in space.seeds if s.recipe["randaug_magnitude"] == 15)
    candidate = seed.candidate(epochs=1)
    resolutions = space.param("arch.resolution").domain.values() or ()
    arch = replace(candidate.arch, num_classes=10, resolution=min(resolutions))

    def first_batch(magnitude: int) -> tuple[torch.Tensor, torch.Tensor]:
        recipe = replace(candidate.recipe, randaug_magnitude=magnitude)
        source = build_data("digits", arch, recipe)
        loader, sampler, _ = build_loaders(
            source,
            per_rank_batch=8,
            ctx=DistContext(),
            device=torch.device("cpu"),
            workers=0,
            seed=0,
        )
        sampler.set_epoch(0)
        images, labels = next(iter(loader))
        return images, labels

    images_10, labels_10 = first_batch(10)
    images_15, labels_15 = first_batch(15)
    again_15, _ = first_batch(15)
    assert torch.equal(labels_10, labels_15)  # same images in the same order
    assert torch.equal(images_15, again_15)  # so the difference is the magnitude's
    assert not torch.equal(images_10, images_15)
    differ = sum(not torch.equal(a, b) for a, b in zip(images_10, images_15, strict=True))
    assert differ >= 4, differ
