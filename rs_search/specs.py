"""Candidate = ArchSpec + RecipeSpec: the contract every module speaks (DESIGN.md section 3).

``ArchSpec`` holds exactly what decides latency and memory (layout, widths, resolution, SE,
ResNet-D, classes), so its ``key()`` is the latency-cache key. ``RecipeSpec`` holds how the
candidate is trained; dropout and stochastic depth live here because they change training, not
inference cost, and the model builder takes them as keyword arguments.

Both are frozen keyword-only dataclasses with a JSON round trip (``to_dict``/``from_dict``) that
rejects unknown keys and wrong types with a ``SpecError`` naming the key path.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import yaml

from rs_search.errors import SpecError

# Block layouts of the published family (Bello et al. 2021, Table 7; official code).
NAMED_LAYOUTS: dict[int, tuple[int, int, int, int]] = {
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
    200: (3, 24, 36, 3),
    270: (4, 29, 53, 4),
    350: (4, 36, 72, 4),
    420: (4, 44, 87, 4),
}

# Upper bounds. The paper gives none: these are project heuristics, generous for real use (the
# largest published figure times a margin), that turn a typo into one clear error instead of a
# check that hangs or a run that asks for terabytes (issue 10, audit: ``[100000, 1, 1, 1]`` hung
# ``space check``; ``synthetic:1000000000000`` tried to allocate 192 TB).
MAX_BLOCKS_PER_STAGE = 200  # ~2.3x the most the family uses (87: ResNet-RS-420's third stage)
MAX_NUM_CLASSES = 250_000  # above the largest common label sets (GLDv2 203,094; IN-21k 21,841)
MAX_STEM_WIDTH = 512  # 16x the paper's 32 (the stem's first two 3x3 convs)
MAX_IN_CHANNELS = 1024  # multispectral and hyperspectral images have up to a few hundred bands
MAX_EPOCHS = 10_000  # ~29x the paper's longest schedule (350 epochs)
MAX_BATCH_SIZE = 65_536  # 16x the paper's 4096; large-batch studies (LARS) stop at 64k
MAX_RANDAUG_LAYERS = 16  # the official op set has 16 ops; the paper uses 2

Precision = Literal["auto", "fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")


def layout_for(
    depth: int | str | list[int] | tuple[int, ...], *, where: str = "depth"
) -> tuple[int, ...]:
    """A named depth (50..420) or an explicit list of four block counts -> the block layout."""
    if isinstance(depth, bool):
        raise SpecError(f"{where}: {depth!r} is not a depth; allowed: {_depth_help()}")
    if isinstance(depth, str) and depth.isdigit():
        depth = int(depth)
    if isinstance(depth, str) and "-" in depth:  # "2-2-2-2", the form Optuna stores
        try:
            depth = [int(p) for p in depth.split("-")]
        except ValueError:
            raise SpecError(
                f"{where}: {depth!r} is not a layout; allowed: {_depth_help()}"
            ) from None
    if isinstance(depth, int):
        if depth not in NAMED_LAYOUTS:
            raise SpecError(f"{where}: {depth} is not a named depth; allowed: {_depth_help()}")
        return NAMED_LAYOUTS[depth]
    if isinstance(depth, (list, tuple)):
        if len(depth) != 4 or not all(
            isinstance(b, int) and not isinstance(b, bool) for b in depth
        ):
            raise SpecError(f"{where}: {list(depth)!r} is not a layout; allowed: {_depth_help()}")
        if any(b < 1 for b in depth):
            raise SpecError(
                f"{where}: {list(depth)!r} has a stage with no blocks; each stage needs >= 1"
            )
        if any(b > MAX_BLOCKS_PER_STAGE for b in depth):
            raise SpecError(
                f"{where}: {list(depth)!r} has a stage with more than {MAX_BLOCKS_PER_STAGE} "
                f"blocks; allowed: 1..{MAX_BLOCKS_PER_STAGE} per stage (project heuristic: "
                "ResNet-RS-420 has 87)"
            )
        return tuple(depth)
    raise SpecError(f"{where}: {depth!r} is not a depth; allowed: {_depth_help()}")


def _depth_help() -> str:
    named = ", ".join(str(d) for d in NAMED_LAYOUTS)
    return f"a named depth ({named}) or four block counts such as [2, 2, 2, 2]"


def layout_label(layout: tuple[int, ...]) -> str:
    """``50`` for a published layout, else ``"2-2-2-2"``.

    The second form is also how Optuna stores a layout choice.
    """
    for depth, named in NAMED_LAYOUTS.items():
        if named == tuple(layout):
            return str(depth)
    return "-".join(str(b) for b in layout)


def _stable_key(payload: Mapping[str, Any]) -> str:
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _check_type(value: Any, expected: type | tuple[type, ...], where: str) -> None:
    # bool is an int subclass; a YAML ``true`` must not pass as a number.
    if isinstance(value, bool) and bool not in (
        expected if isinstance(expected, tuple) else (expected,)
    ):
        raise SpecError(f"{where}: expected {_type_name(expected)}, got {value!r}")
    if not isinstance(value, expected):
        raise SpecError(f"{where}: expected {_type_name(expected)}, got {value!r}")


def _type_name(expected: type | tuple[type, ...]) -> str:
    if isinstance(expected, tuple):
        return " or ".join(t.__name__ for t in expected)
    return expected.__name__


_ARCH_INT_MAX = {
    "stem_width": MAX_STEM_WIDTH,
    "num_classes": MAX_NUM_CLASSES,
    "in_channels": MAX_IN_CHANNELS,
}


@dataclass(frozen=True, kw_only=True)
class ArchSpec:
    """What decides latency and memory. Defaults are ResNet-RS-50 at 224 px with 1000 classes."""

    layout: tuple[int, ...] = NAMED_LAYOUTS[50]
    width: float = 1.0  # multiplier on every conv width, stem included (rounded to 8)
    resolution: int = 224
    se_ratio: float = 0.25  # 0 disables squeeze-and-excitation
    resnet_d: bool = True  # False: classic 7x7 stem + max pool, strided 1x1 shortcut
    stem_width: int = 32  # width of the first two 3x3 stem convs before the multiplier
    num_classes: int = 1000
    in_channels: int = 3

    def __post_init__(self) -> None:
        object.__setattr__(self, "layout", layout_for(tuple(self.layout), where="arch.layout"))
        _check_type(self.width, (int, float), "arch.width")
        if not 0 < self.width <= 8:
            raise SpecError(f"arch.width: {self.width} is out of range; allowed: 0 < width <= 8")
        _check_type(self.resolution, int, "arch.resolution")
        if not 8 <= self.resolution <= 1024:
            raise SpecError(f"arch.resolution: {self.resolution} is out of range; allowed: 8..1024")
        _check_type(self.se_ratio, (int, float), "arch.se_ratio")
        if not 0 <= self.se_ratio <= 1:
            raise SpecError(f"arch.se_ratio: {self.se_ratio} is out of range; allowed: 0..1")
        _check_type(self.resnet_d, bool, "arch.resnet_d")
        for name, most in _ARCH_INT_MAX.items():
            value = getattr(self, name)
            _check_type(value, int, f"arch.{name}")
            if value < 1:
                raise SpecError(f"arch.{name}: {value} must be >= 1")
            if value > most:
                raise SpecError(
                    f"arch.{name}: {value} is too large; allowed: 1..{most} (project heuristic)"
                )
        object.__setattr__(self, "width", float(self.width))
        object.__setattr__(self, "se_ratio", float(self.se_ratio))

    @property
    def depth(self) -> int:
        """Conv+fc layers of a bottleneck ResNet: 3 per block + stem + head (50 for [3,4,6,3])."""
        return 3 * sum(self.layout) + 2

    @property
    def label(self) -> str:
        return layout_label(self.layout)

    @property
    def short_label(self) -> str:
        """``50 w1 r160`` (``1-1-1-1 w0.25 r32``): depth, width multiplier, resolution; the one
        way tables, logs and hover text name an architecture."""
        return f"{self.label} w{self.width:g} r{self.resolution}"

    def to_dict(self) -> dict[str, Any]:
        return {
            f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
            for f in fields(self)
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "arch") -> ArchSpec:
        """Accepts every field; ``depth`` (a named depth) may stand in for ``layout``."""
        if not isinstance(data, Mapping):
            raise SpecError(f"{where}: expected a mapping, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        values = dict(data)
        if "depth" in values:
            if "layout" in values:
                raise SpecError(f"{where}: give either depth or layout, not both")
            values["layout"] = layout_for(values.pop("depth"), where=f"{where}.depth")
        unknown = sorted(set(values) - known)
        if unknown:
            raise SpecError(
                f"{where}.{unknown[0]}: unknown key; allowed: depth, {', '.join(sorted(known))}"
            )
        if "layout" in values:
            values["layout"] = layout_for(values["layout"], where=f"{where}.layout")
        return cls(**values)

    def key(self) -> str:
        """Stable 16-hex-digit hash of the architecture: the latency cache key."""
        return _stable_key(self.to_dict())


_RECIPE_INT_MAX = {"epochs": MAX_EPOCHS, "batch_size": MAX_BATCH_SIZE}


@dataclass(frozen=True, kw_only=True)
class RecipeSpec:
    """How a candidate is trained. Defaults are the paper's recipe (DESIGN.md section 1)."""

    epochs: int = 350
    batch_size: int = 256
    lr_per_256: float = 0.1  # peak LR = lr_per_256 * batch_size / 256
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 4e-5  # not applied to BN parameters or biases
    label_smoothing: float = 0.1
    ema_decay: float = 0.9999  # 0 disables the EMA
    dropout: float = 0.25
    stochastic_depth: float = 0.0
    randaug_layers: int = 2  # 0 disables RandAugment
    randaug_magnitude: int = 10
    warmup_epochs: int = 5
    precision: str = "auto"  # auto: bf16 on CUDA, fp32 on CPU

    def __post_init__(self) -> None:
        ints = ("epochs", "batch_size", "randaug_layers", "randaug_magnitude", "warmup_epochs")
        for name in ints:
            _check_type(getattr(self, name), int, f"recipe.{name}")
        for name in (
            "lr_per_256",
            "momentum",
            "weight_decay",
            "label_smoothing",
            "ema_decay",
            "dropout",
            "stochastic_depth",
        ):
            value = getattr(self, name)
            _check_type(value, (int, float), f"recipe.{name}")
            if not math.isfinite(value):  # YAML's .nan and .inf pass every comparison below
                raise SpecError(f"recipe.{name}: {value} is not a finite number")
            object.__setattr__(self, name, float(value))
        _check_type(self.nesterov, bool, "recipe.nesterov")
        _check_type(self.precision, str, "recipe.precision")
        for name, most in _RECIPE_INT_MAX.items():
            value = getattr(self, name)
            if value < 1:
                raise SpecError(f"recipe.{name}: {value} must be >= 1")
            if value > most:
                raise SpecError(
                    f"recipe.{name}: {value} is too large; allowed: 1..{most} (project heuristic)"
                )
        if self.lr_per_256 <= 0:
            raise SpecError(f"recipe.lr_per_256: {self.lr_per_256} must be > 0")
        for name in ("momentum", "label_smoothing", "ema_decay", "dropout", "stochastic_depth"):
            value = getattr(self, name)
            if not 0 <= value < 1:
                raise SpecError(f"recipe.{name}: {value} is out of range; allowed: 0 <= value < 1")
        if self.weight_decay < 0:
            raise SpecError(f"recipe.weight_decay: {self.weight_decay} must be >= 0")
        if not 0 <= self.randaug_magnitude <= 30:
            raise SpecError(f"recipe.randaug_magnitude: {self.randaug_magnitude}; allowed: 0..30")
        if self.randaug_layers < 0 or self.warmup_epochs < 0:
            raise SpecError("recipe.randaug_layers and recipe.warmup_epochs must be >= 0")
        for name, most in (("randaug_layers", MAX_RANDAUG_LAYERS), ("warmup_epochs", MAX_EPOCHS)):
            if getattr(self, name) > most:
                raise SpecError(
                    f"recipe.{name}: {getattr(self, name)} is too large; allowed: 0..{most} "
                    "(project heuristic)"
                )
        if self.precision not in PRECISIONS:
            raise SpecError(
                f"recipe.precision: {self.precision!r}; allowed: {', '.join(PRECISIONS)}"
            )

    @property
    def lr(self) -> float:
        """Peak learning rate, scaled linearly with the batch (0.1 per 256 images)."""
        return self.lr_per_256 * self.batch_size / 256

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "recipe") -> RecipeSpec:
        if not isinstance(data, Mapping):
            raise SpecError(f"{where}: expected a mapping, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SpecError(
                f"{where}.{unknown[0]}: unknown key; allowed: {', '.join(sorted(known))}"
            )
        return cls(**dict(data))

    def key(self) -> str:
        return _stable_key(self.to_dict())


@dataclass(frozen=True, kw_only=True)
class Candidate:
    """One point of the search: an architecture and the recipe that trains it."""

    arch: ArchSpec = field(default_factory=ArchSpec)
    recipe: RecipeSpec = field(default_factory=RecipeSpec)

    def to_dict(self) -> dict[str, Any]:
        return {"arch": self.arch.to_dict(), "recipe": self.recipe.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "candidate") -> Candidate:
        """Top-level ``arch:`` and ``recipe:`` mappings; other top-level keys (metrics,
        provenance written by export) are allowed and ignored."""
        if not isinstance(data, Mapping):
            raise SpecError(
                f"{where}: expected a mapping with 'arch' and 'recipe', got {type(data).__name__}"
            )
        if "arch" not in data:
            raise SpecError(f"{where}: missing 'arch' mapping")
        arch = ArchSpec.from_dict(data["arch"], where=f"{where}: arch")
        recipe = RecipeSpec.from_dict(data.get("recipe") or {}, where=f"{where}: recipe")
        return cls(arch=arch, recipe=recipe)

    def key(self) -> str:
        return _stable_key(self.to_dict())

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_yaml_file(cls, path: str | Path) -> Candidate:
        """Read a candidate YAML (``rs-search space sample`` output, an export, or hand-written)."""
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise SpecError(f"{path}: cannot read candidate file ({exc.strerror})") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            at = f" (line {mark.line + 1})" if mark is not None else ""
            raise SpecError(f"{path}: not valid YAML{at}") from None
        return cls.from_dict(data, where=str(path))
