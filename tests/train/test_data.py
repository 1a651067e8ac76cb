"""Data sources and augmentation, on real files: digits, imagefolder of PNG/JPEG, synthetic,
CIFAR offline, and every way a folder can be wrong (one DataError line naming the path)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from rs_search.errors import DataError
from rs_search.specs import ArchSpec, RecipeSpec
from rs_search.train.augment import (
    AugmentPolicy,
    CenterCropFraction,
    eval_transform,
    train_transform,
)
from rs_search.train.data import build_data, digits_split, parse_data_spec

from .conftest import make_imagefolder, write_image

RECIPE = RecipeSpec(randaug_layers=2, randaug_magnitude=10)


def arch(**kw: object) -> ArchSpec:
    base: dict[str, object] = {
        "layout": (1, 1, 1, 1),
        "width": 0.25,
        "resolution": 24,
        "num_classes": 10,
    }
    base.update(kw)
    return ArchSpec(**base)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------ digits


def test_digits_split_is_fixed_and_stratified() -> None:
    x_train, y_train, x_val, y_val = digits_split()
    assert x_train.shape == (1437, 1, 8, 8) and x_val.shape == (360, 1, 8, 8)
    assert x_train.dtype == torch.uint8 and int(x_train.max()) == 255
    again = digits_split()
    assert torch.equal(again[3], y_val) and torch.equal(again[2], x_val)
    # Stratified: every class has 20% (+-1 image) of its images in val.
    counts_val = torch.bincount(y_val, minlength=10)
    counts_all = counts_val + torch.bincount(y_train, minlength=10)
    assert torch.all((counts_val - 0.2 * counts_all).abs() <= 1)


@pytest.mark.parametrize("channels", [1, 3])
def test_digits_items_match_the_candidate(channels: int) -> None:
    source = build_data("digits", arch(in_channels=channels, resolution=20), RECIPE)
    assert (source.train_size, source.val_size, source.num_classes) == (1437, 360, 10)
    image, label = source.train[0]
    assert (
        image.shape == (channels, 20, 20) and image.dtype == torch.uint8
    )  # normalised on the device
    assert type(image) is torch.Tensor  # plain tensors, not tv_tensors
    assert 0 <= label < 10
    val_image, _ = source.val[0]
    assert val_image.shape == (channels, 20, 20)
    if channels == 3:  # grayscale replicated
        assert torch.equal(val_image[0], val_image[2])


def test_data_class_count_must_match_the_candidate() -> None:
    with pytest.raises(DataError, match="has 10 classes but arch.num_classes is 1000"):
        build_data("digits", arch(num_classes=1000), RECIPE)


# -------------------------------------------------------------------------------- augmentation


def test_train_transform_augments_each_image_on_its_own() -> None:
    """Per-image RandAugment and crops: copies of one image come out different."""
    torch.manual_seed(0)
    image = torch.randint(0, 256, (3, 40, 40), dtype=torch.uint8)
    tf = train_transform(
        resolution=32, channels=3, randaug_layers=2, randaug_magnitude=10, policy=AugmentPolicy()
    )
    outs = [tf(image) for _ in range(8)]
    assert all(o.shape == (3, 32, 32) for o in outs)
    distinct = {tuple(o.flatten()[:64].tolist()) for o in outs}
    assert len(distinct) == 8


def test_eval_transform_is_a_deterministic_centre_crop() -> None:
    # A 64x64 image: 4-pixel white border, black inside. 0.875 of 64 = 56 px keeps only the inside.
    image = torch.zeros(1, 64, 64, dtype=torch.uint8)
    image[:, :4, :] = image[:, -4:, :] = image[:, :, :4] = image[:, :, -4:] = 255
    cropped = CenterCropFraction(56)(image)
    assert cropped.shape == (1, 56, 56) and int(cropped.max()) == 0
    tf = eval_transform(resolution=32, channels=1, policy=AugmentPolicy(mean=(0.0,), std=(1.0,)))
    out = tf(image)
    assert out.shape == (1, 32, 32) and torch.equal(out, tf(image))
    assert float(out.abs().max()) < 1e-6


# ------------------------------------------------------------------------------- imagefolder


def test_imagefolder_reads_png_and_jpeg_grayscale_and_rgb(tmp_path: Path) -> None:
    root = make_imagefolder(tmp_path / "pets")
    source = build_data(f"imagefolder:{root}", arch(num_classes=3, resolution=24), RECIPE)
    assert (source.num_classes, source.train_size, source.val_size) == (3, 12, 6)
    for dataset in (source.train, source.val):
        images, labels = next(iter(DataLoader(dataset, batch_size=6, shuffle=False)))
        assert images.shape == (6, 3, 24, 24) and images.dtype == torch.uint8
        assert labels.tolist() == sorted(labels.tolist())  # class folders in sorted order
    # A one-channel candidate reads the same files as grayscale.
    gray = build_data(f"imagefolder:{root}", arch(num_classes=3, in_channels=1), RECIPE)
    assert gray.val[0][0].shape == (1, 24, 24)


def _bad(tmp_path: Path, case: str) -> Path:
    root = tmp_path / "data"
    if case == "missing":
        return root
    if case == "no_val":
        (root / "train" / "a").mkdir(parents=True)
        write_image(root / "train" / "a" / "x.png", mode="RGB", seed=1, fmt="PNG")
        return root
    if case == "classes_at_top":
        for cls in ("a", "b"):
            (root / cls).mkdir(parents=True)
            write_image(root / cls / "x.png", mode="RGB", seed=1, fmt="PNG")
        return root
    if case == "empty_train":
        (root / "train").mkdir(parents=True)
        (root / "val").mkdir()
        return root
    if case == "images_without_classes":
        make_imagefolder(root)
        write_image(root / "val" / "stray.png", mode="RGB", seed=3, fmt="PNG")
        for cls in ("cat", "dog", "emu"):
            for f in (root / "val" / cls).iterdir():
                f.unlink()
            (root / "val" / cls).rmdir()
        return root
    if case == "empty_class":
        make_imagefolder(root)
        (root / "train" / "fox").mkdir()
        (root / "val" / "fox").mkdir()
        return root
    if case == "class_mismatch":
        make_imagefolder(root)
        (root / "val" / "emu").rename(root / "val" / "gnu")
        return root
    if case == "a_file":
        root.parent.mkdir(parents=True, exist_ok=True)
        root.write_text("not a folder")
        return root
    raise AssertionError(case)


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing", "does not exist"),
        ("a_file", "is not a folder"),
        ("no_val", "val is missing"),
        ("classes_at_top", "class folders seem to sit directly"),
        ("empty_train", "train is empty"),
        ("images_without_classes", "holds images but no class folders"),
        ("empty_class", "fox has no images"),
        ("class_mismatch", "different class folders"),
    ],
)
def test_imagefolder_layout_errors_name_the_path(tmp_path: Path, case: str, expected: str) -> None:
    root = _bad(tmp_path, case)
    with pytest.raises(DataError, match=expected) as info:
        build_data(f"imagefolder:{root}", arch(num_classes=3), RECIPE)
    message = str(info.value)
    assert str(root) in message and "\n" not in message


def test_unreadable_image_is_a_data_error_naming_the_file(tmp_path: Path) -> None:
    root = make_imagefolder(tmp_path / "pets")
    broken = root / "train" / "cat" / "cat_9.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n this is not image data")
    source = build_data(f"imagefolder:{root}", arch(num_classes=3), RECIPE)
    index = [p for p, _ in source.train.samples].index(str(broken))  # type: ignore[attr-defined]
    with pytest.raises(DataError, match="cannot read image") as info:
        source.train[index]
    assert str(broken) in str(info.value)


# -------------------------------------------------------------------------- specs, synthetic


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("mnist", "unknown data source; allowed: digits, imagefolder:PATH"),
        ("imagefolder", "needs a path"),
        ("synthetic:x", "CLASSES must be an integer"),
        ("digits:extra", "unknown data source"),
    ],
)
def test_bad_data_specs(spec: str, expected: str) -> None:
    with pytest.raises(DataError, match=expected):
        parse_data_spec(spec)


def test_synthetic_is_deterministic_and_learnable_shaped() -> None:
    source = build_data(
        "synthetic:4", arch(num_classes=4, resolution=16), RecipeSpec(randaug_layers=0)
    )
    assert source.num_classes == 4 and source.train_size == 1024
    a, la = source.val[5]
    b, lb = source.val[5]
    assert torch.equal(a, b) and la == lb == 1
    assert a.shape == (3, 16, 16)
    assert parse_data_spec("synthetic") == ("synthetic", "10")


def test_cifar_absent_names_the_path_and_never_downloads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Opening the data is how ``start`` checks a spec: it must not download (issue 10 audit).
    Before the fix the check created the folder and tried the download."""
    # A proxy on a closed local port: a download attempt would fail at once, online or not.
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    where = tmp_path / "cifar"
    with pytest.raises(DataError, match="no cifar10 dataset there") as info:
        build_data(f"cifar10:{where}", arch(num_classes=10), RECIPE)
    assert str(where) in str(info.value) and "\n" not in str(info.value)
    assert "download=True" in str(info.value)  # says how to fetch it once
    assert not where.exists()  # nothing created, nothing fetched
