"""Data sources chosen by a spec string: ``digits``, ``imagefolder:PATH``, ``cifar10:PATH``,
``cifar100:PATH`` and ``synthetic[:CLASSES]``.

Every source returns a :class:`DataSource`: a train and a val ``Dataset`` that yield
``(uint8 image (C, R, R), label)`` with the recipe's per-image augmentation already applied
(:mod:`rs_search.train.augment`), the training split again preprocessed like validation (the
train accuracy measured like validation reads it), the number of classes, how many images each
split has, and the per-channel mean and std that the engine normalises with on the device
(:class:`rs_search.train.step.DeviceNormalize`). uint8 batches are a quarter of float32 ones in
the loader processes' shared memory and in every host copy (issue 14: float32 batches of the
paper's space needed ~20 GB of shared memory per worker at 160 px).
Everything a user can get wrong (unknown spec, missing/empty/mis-laid folder, unreadable image,
offline and absent CIFAR) is a :class:`~rs_search.errors.DataError` with one line naming the path.
"""

from __future__ import annotations

import copy
import os
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

from rs_search.errors import DataError
from rs_search.specs import MAX_NUM_CLASSES, ArchSpec, RecipeSpec
from rs_search.train.augment import AugmentPolicy, eval_transform, train_transform

__all__ = [
    "DATA_SPECS",
    "DataSource",
    "build_data",
    "digits_split",
    "parse_data_spec",
    "uint8_output",
]

DATA_SPECS = "digits, imagefolder:PATH, cifar10:PATH, cifar100:PATH, synthetic[:CLASSES]"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

Transform = Callable[[Any], torch.Tensor]


@dataclass(frozen=True, kw_only=True)
class DataSource:
    """A train and a val split, ready for a DataLoader (uint8 images, augmented per item).

    ``train_eval`` holds the images of ``train``, in the same order, with the eval transform
    (no augmentation): what the engine measures train accuracy on, like validation.
    """

    name: str
    train: Dataset[tuple[torch.Tensor, int]]
    val: Dataset[tuple[torch.Tensor, int]]
    train_eval: Dataset[tuple[torch.Tensor, int]]
    num_classes: int
    train_size: int
    val_size: int
    mean: tuple[float, ...] = ()  # per channel, on the 0..1 scale; set by build_data
    std: tuple[float, ...] = ()


def parse_data_spec(spec: str) -> tuple[str, str]:
    """Split a spec: ``"imagefolder:/data/x"`` -> ``("imagefolder", "/data/x")``,
    ``"digits"`` -> ``("digits", "")``, ``"synthetic"`` -> ``("synthetic", "10")``."""
    kind, _, arg = spec.partition(":")
    kind = kind.strip().lower()
    if kind in ("digits",) and not arg:
        return kind, ""
    if kind == "synthetic":
        # ASCII digits only (str.isdigit takes "²"), and bounded before int() (issue 10 audit:
        # synthetic:1000000000000 asked for 192 TB of class patterns).
        if arg and not (re.fullmatch(r"[0-9]{1,7}", arg) and 2 <= int(arg) <= MAX_NUM_CLASSES):
            raise DataError(
                f"data {spec!r}: CLASSES must be an integer from 2 to {MAX_NUM_CLASSES} "
                "(project heuristic), as in synthetic:10"
            )
        return kind, arg or "10"
    if kind in ("imagefolder", "cifar10", "cifar100"):
        if not arg:
            raise DataError(f"data {spec!r}: {kind} needs a path, as in {kind}:/data/{kind}")
        return kind, arg
    raise DataError(f"data {spec!r}: unknown data source; allowed: {DATA_SPECS}")


# --------------------------------------------------------------------------------------- digits


# Pixel statistics of the digits training split (values / 16), measured once; digits is
# grayscale, so the one value serves every replicated channel.
_DIGITS_MEAN = (0.3054,)
_DIGITS_STD = (0.3760,)
# The 8x8 digits fill their frame: the ImageNet crop range (0.08..1 of the area) would often cut
# away the strokes that tell a 3 from an 8, leaving no label information, so training crops keep
# at least 40% of the area (about 5x5 of the 8x8 pixels). A mirrored 2, 3, 5 or 7 is not a digit,
# so there is no flip; uncovered pixels are filled with the background (0), not grey.
DIGITS_POLICY = AugmentPolicy(
    crop_scale=(0.4, 1.0), hflip=False, fill=0, mean=_DIGITS_MEAN, std=_DIGITS_STD
)


def digits_split(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """scikit-learn's 1797 8x8 digits as uint8 ``(N, 1, 8, 8)`` tensors, split 80/20.

    The split is stratified by class and fixed by ``seed`` (not the training seed), so every
    candidate of a study is judged on the same 360 validation images.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = torch.from_numpy(bunch.images).mul(255.0 / 16.0).round().to(torch.uint8).unsqueeze(1)
    labels = torch.from_numpy(bunch.target).long()
    idx_train, idx_val = train_test_split(
        list(range(len(labels))), test_size=0.2, stratify=bunch.target, random_state=seed
    )
    return images[idx_train], labels[idx_train], images[idx_val], labels[idx_val]


class TensorImages(Dataset[tuple[torch.Tensor, int]]):
    """uint8 ``(N, C, H, W)`` images in memory, channels replicated to ``channels``."""

    def __init__(
        self, images: torch.Tensor, labels: torch.Tensor, transform: Transform, *, channels: int
    ) -> None:
        self.images = images
        self.labels = labels
        self.transform = transform
        self.channels = channels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.images[index]
        if image.shape[0] != self.channels:
            image = image[:1].expand(self.channels, -1, -1)
        return self.transform(image), int(self.labels[index])


def _digits(arch: ArchSpec, train_tf: Transform, val_tf: Transform) -> DataSource:
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as F

    x_train, y_train, x_val, y_val = digits_split()

    def upscale(x: torch.Tensor) -> torch.Tensor:
        # Once, in memory: the source images are the 8x8 digits enlarged to the candidate's
        # resolution, so crops and RandAugment work on a real-size image.
        size = [arch.resolution, arch.resolution]
        return F.resize(x, size, interpolation=InterpolationMode.BICUBIC, antialias=True)

    train_images = upscale(x_train)
    return DataSource(
        name="digits",
        train=TensorImages(train_images, y_train, train_tf, channels=arch.in_channels),
        val=TensorImages(upscale(x_val), y_val, val_tf, channels=arch.in_channels),
        train_eval=TensorImages(train_images, y_train, val_tf, channels=arch.in_channels),
        num_classes=10,
        train_size=len(y_train),
        val_size=len(y_val),
    )


# ------------------------------------------------------------------------------------ synthetic


class SyntheticImages(Dataset[tuple[torch.Tensor, int]]):
    """Deterministic generated images: a fixed random 4x4 pattern per class, enlarged, plus noise.

    Learnable (the pattern carries the label) and cheap; image ``i`` is the same on every call
    and in every process, so it needs no storage and no download.
    """

    def __init__(
        self,
        *,
        size: int,
        classes: int,
        resolution: int,
        channels: int,
        transform: Transform,
        offset: int,
    ) -> None:
        self.size = size
        self.classes = classes
        self.resolution = resolution
        self.channels = channels
        self.transform = transform
        self.offset = offset
        gen = torch.Generator().manual_seed(1234)
        patterns = torch.rand(classes, channels, 4, 4, generator=gen)
        self.patterns = torch.nn.functional.interpolate(patterns, size=resolution, mode="bilinear")

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        label = index % self.classes
        gen = torch.Generator().manual_seed(self.offset + index)
        noise = torch.rand(self.channels, self.resolution, self.resolution, generator=gen)
        image = (0.6 * self.patterns[label] + 0.4 * noise).mul(255).round().to(torch.uint8)
        return self.transform(image), label


def _synthetic(classes: int, arch: ArchSpec, train_tf: Transform, val_tf: Transform) -> DataSource:
    common = {"classes": classes, "resolution": arch.resolution, "channels": arch.in_channels}
    return DataSource(
        name=f"synthetic:{classes}",
        train=SyntheticImages(size=1024, transform=train_tf, offset=0, **common),
        val=SyntheticImages(size=256, transform=val_tf, offset=1_000_000, **common),
        train_eval=SyntheticImages(size=1024, transform=val_tf, offset=0, **common),
        num_classes=classes,
        train_size=1024,
        val_size=256,
    )


# ---------------------------------------------------------------------------------- imagefolder


class ImageLoader:
    """PIL loader for ImageFolder: any mode -> RGB (or L for one-channel candidates).

    A file PIL cannot decode is a DataError naming it, raised in the worker that reads it.
    """

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def __call__(self, path: str) -> Any:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as image:
                return image.convert(self.mode)
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            reason = str(exc).split("\n")[0]
            raise DataError(f"{path}: cannot read image ({reason})") from None


def _image_mode(arch: ArchSpec, where: str) -> str:
    if arch.in_channels == 3:
        return "RGB"
    if arch.in_channels == 1:
        return "L"
    raise DataError(
        f"{where}: images have 1 or 3 channels, but arch.in_channels is {arch.in_channels}"
    )


def _class_dirs(folder: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def _has_images(folder: Path) -> bool:
    return any(
        e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS) for e in os.scandir(folder)
    )


def _check_split(root: Path, split: str) -> list[str]:
    folder = root / split
    layout = f"expected {root}/train/<class>/<image> and {root}/val/<class>/<image>"
    if not folder.is_dir():
        if split == "val" and (root / "validation").is_dir():
            raise DataError(f"{folder} is missing (found {root}/validation; rename it to val)")
        hint = ""
        if _class_dirs(root) and split == "train":
            hint = (
                " (the class folders seem to sit directly in it; move them under train/ and val/)"
            )
        raise DataError(f"{folder} is missing{hint}; {layout}")
    classes = _class_dirs(folder)
    if not classes:
        if _has_images(folder):
            raise DataError(f"{folder} holds images but no class folders; {layout}")
        raise DataError(f"{folder} is empty; {layout}")
    empty = [c for c in classes if not _any_image(folder / c)]
    if empty:
        raise DataError(
            f"{folder / empty[0]} has no images ({', '.join(IMAGE_EXTENSIONS)}); "
            f"{len(empty)} of {len(classes)} class folders are empty"
        )
    return classes


def _any_image(folder: Path) -> bool:
    for _, _, files in os.walk(folder, followlinks=True):
        if any(f.lower().endswith(IMAGE_EXTENSIONS) for f in files):
            return True
    return False


def _imagefolder(path: str, arch: ArchSpec, train_tf: Transform, val_tf: Transform) -> DataSource:
    from torchvision.datasets import ImageFolder

    root = Path(path).expanduser()
    if not root.exists():
        raise DataError(f"{root} does not exist (data imagefolder:{path})")
    if not root.is_dir():
        raise DataError(f"{root} is not a folder (data imagefolder:{path})")
    train_classes = _check_split(root, "train")
    val_classes = _check_split(root, "val")
    if train_classes != val_classes:
        only_train = sorted(set(train_classes) - set(val_classes))
        only_val = sorted(set(val_classes) - set(train_classes))
        detail = (
            f"only in train: {', '.join(only_train[:5])}"
            if only_train
            else f"only in val: {', '.join(only_val[:5])}"
        )
        raise DataError(f"{root}: train/ and val/ have different class folders ({detail})")
    loader = ImageLoader(_image_mode(arch, str(root)))
    try:
        train = ImageFolder(
            str(root / "train"), transform=train_tf, loader=loader, is_valid_file=_is_image
        )
        val = ImageFolder(
            str(root / "val"), transform=val_tf, loader=loader, is_valid_file=_is_image
        )
    except (FileNotFoundError, OSError) as exc:
        raise DataError(f"{root}: {exc}") from None
    return DataSource(
        name=f"imagefolder:{path}",
        train=train,
        val=val,
        train_eval=with_transform(train, val_tf),
        num_classes=len(train.classes),
        train_size=len(train),
        val_size=len(val),
    )


def with_transform(dataset: Any, transform: Transform) -> Any:
    """A shallow copy of a torchvision dataset with another per-item ``transform``: the same
    files (or arrays) in the same order, without scanning or loading them again (a second scan of
    an ImageNet-sized train folder takes tens of seconds). ``DatasetFolder`` and the CIFAR
    datasets apply ``self.transform`` in ``__getitem__``."""
    clone = copy.copy(dataset)
    clone.transform = transform
    return clone


def _is_image(path: str) -> bool:
    name = os.path.basename(path)
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


# ------------------------------------------------------------------------------------------ cifar


class _ConvertThen:
    """PIL mode conversion, then ``transform`` (a class, not a lambda, so workers can pickle it)."""

    def __init__(self, mode: str, transform: Transform) -> None:
        self.mode = mode
        self.transform = transform

    def __call__(self, image: Any) -> torch.Tensor:
        return self.transform(image.convert(self.mode))


def _cifar(
    kind: str, path: str, arch: ArchSpec, train_tf: Transform, val_tf: Transform
) -> DataSource:
    """torchvision's CIFAR-10/100 in ``path``. Never downloaded here: opening the data is also how
    ``start`` checks a data spec, and a check must not fetch 170 MB or create folders (issue 10
    audit); the error says how to fetch it once."""
    from torchvision.datasets import CIFAR10, CIFAR100

    cls = CIFAR10 if kind == "cifar10" else CIFAR100
    root = Path(path).expanduser()
    mode = _image_mode(arch, str(root))

    def load(train: bool, transform: Transform) -> Any:
        return cls(str(root), train=train, transform=_ConvertThen(mode, transform))

    try:
        train = load(True, train_tf)
        val = load(False, val_tf)
    except (RuntimeError, OSError) as exc:  # torchvision: "Dataset not found or corrupted."
        reason = str(exc).split("\n")[0]
        code = f"from torchvision.datasets import {cls.__name__}; "
        code += f"{cls.__name__}({str(root)!r}, download=True)"
        fetch = f"python -c {shlex.quote(code)}"
        raise DataError(
            f"{root}: no {kind} dataset there ({reason}); put torchvision's {cls.base_folder} "
            f"folder in {root}, or download it once: {fetch}"
        ) from None
    return DataSource(
        name=f"{kind}:{path}",
        train=train,
        val=val,
        train_eval=with_transform(train, _ConvertThen(mode, val_tf)),
        num_classes=len(train.classes),
        train_size=len(train),
        val_size=len(val),
    )


# ------------------------------------------------------------------------------------------ entry


def build_data(spec: str, arch: ArchSpec, recipe: RecipeSpec) -> DataSource:
    """Open the data ``spec`` for a candidate: images at ``arch.resolution`` with
    ``arch.in_channels`` channels, augmented per the recipe. Raises DataError for bad data and
    when the data's class count differs from ``arch.num_classes``."""
    kind, arg = parse_data_spec(spec)
    policy = DIGITS_POLICY if kind == "digits" else AugmentPolicy()
    train_tf = uint8_output(
        train_transform(
            resolution=arch.resolution,
            channels=arch.in_channels,
            randaug_layers=recipe.randaug_layers,
            randaug_magnitude=recipe.randaug_magnitude,
            policy=policy,
        )
    )
    val_tf = uint8_output(
        eval_transform(resolution=arch.resolution, channels=arch.in_channels, policy=policy)
    )
    if kind == "digits":
        source = _digits(arch, train_tf, val_tf)
    elif kind == "synthetic":
        source = _synthetic(int(arg), arch, train_tf, val_tf)
    elif kind == "imagefolder":
        source = _imagefolder(arg, arch, train_tf, val_tf)
    else:
        source = _cifar(kind, arg, arch, train_tf, val_tf)
    if source.num_classes != arch.num_classes:
        raise DataError(
            f"data {spec!r} has {source.num_classes} classes but arch.num_classes is "
            f"{arch.num_classes}; set arch.num_classes: {source.num_classes} in the candidate"
        )
    mean, std = policy.channel_stats(arch.in_channels)
    return replace(source, mean=tuple(mean), std=tuple(std))


def uint8_output(transform: v2.Compose) -> v2.Compose:
    """``transform`` without its float conversion and normalisation: the same pixels as uint8,
    which the engine scales and normalises on the device with the policy's statistics
    (``DeviceNormalize`` repeats ``ToDtype(float32, scale=True)`` and ``Normalize`` exactly).
    Dropping the steps by type keeps augment.py's transforms the single definition of the
    preprocessing; its steps before the conversion all work on uint8 already."""
    kept = [t for t in transform.transforms if not isinstance(t, v2.ToDtype | v2.Normalize)]
    return v2.Compose(kept)
