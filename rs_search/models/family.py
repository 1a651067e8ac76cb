"""The published ResNet-RS family: named constructors, published recipes and reference counts.

What is *published* and what is *counted* (``../shared/reference/resnet_rs.yaml``, whose header
and ``sources`` say which is which):

* published by the official code: the members, their layouts, resolutions and per-model recipe
  values (tensorflow/tpu ``models/official/resnet/resnet_rs``: the README table and
  ``configs/resnetrs<depth>_i<res>.yaml``), and their ImageNet top-1 and V100/TPU latencies
  (README table; top-1 is shown by ``rs-search models``);
* counted, not published: the parameters (``params_m``, source ``derived``: "counted from the
  official architecture definition; agrees with timm param counts exactly") and the FLOPs
  (``flops_g``: 2 x multiply-adds of one forward pass at that resolution, 1000 classes, the
  ``torch.utils.flop_counter`` convention, rounded to 0.1). The official README table gives
  neither and the reference file cites no publication for them: they are its counts, which
  ``tests/models`` check our builder against (``complexity.count_flops`` gives ours unrounded).

The members are data fed to the one builder (``resnet.build_model``), as in timm.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from rs_search.errors import SpecError
from rs_search.models.resnet import ResNetRS, build_model
from rs_search.specs import NAMED_LAYOUTS, ArchSpec

__all__ = [
    "FAMILY",
    "FamilyMember",
    "create_family_model",
    "family_arch",
    "resnetrs50",
    "resnetrs101",
    "resnetrs152",
    "resnetrs200",
    "resnetrs270",
    "resnetrs350",
    "resnetrs420",
]


@dataclass(frozen=True, kw_only=True)
class FamilyMember:
    """One published ResNet-RS model.

    ``resolutions`` are the published image sizes, the first being the default. ``dropout``,
    ``stochastic_depth`` and ``randaug_magnitude`` are the recipe of that first variant;
    ``overrides`` holds what differs at another published resolution (RS-101@192 uses
    RandAugment magnitude 15, RS-350@320 dropout 0.4); :meth:`recipe_at` merges them.
    """

    name: str
    depth: int
    layout: tuple[int, ...]
    resolutions: tuple[int, ...]
    # Reference counts, not published figures (see the module docstring): trainable parameters
    # in millions with 1000 classes, and GFLOPs (2 x multiply-adds, one image) per resolution.
    params_m: float
    flops_g: Mapping[int, float] = field(hash=False)
    dropout: float
    stochastic_depth: float
    randaug_magnitude: int
    overrides: Mapping[int, Mapping[str, float]] = field(
        default_factory=lambda: MappingProxyType({}), hash=False
    )

    @property
    def resolution(self) -> int:
        """The default (first published) resolution."""
        return self.resolutions[0]

    def recipe_at(self, resolution: int | None = None) -> dict[str, float]:
        """``dropout``, ``stochastic_depth`` and ``randaug_magnitude`` of the published variant at
        ``resolution`` (the default variant's values at an unpublished resolution)."""
        values: dict[str, float] = {
            "dropout": self.dropout,
            "stochastic_depth": self.stochastic_depth,
            "randaug_magnitude": self.randaug_magnitude,
        }
        key = self.resolution if resolution is None else resolution
        values.update(self.overrides.get(key, {}))
        return values


def _member(
    depth: int,
    params_m: float,
    flops_g: dict[int, float],
    *,
    dropout: float = 0.25,
    stochastic_depth: float = 0.0,
    randaug_magnitude: int = 15,
    overrides: dict[int, dict[str, float]] | None = None,
) -> FamilyMember:
    return FamilyMember(
        name=f"resnetrs{depth}",
        depth=depth,
        layout=NAMED_LAYOUTS[depth],
        resolutions=tuple(flops_g),
        params_m=params_m,
        flops_g=MappingProxyType(dict(flops_g)),
        dropout=dropout,
        stochastic_depth=stochastic_depth,
        randaug_magnitude=randaug_magnitude,
        overrides=MappingProxyType({r: MappingProxyType(o) for r, o in (overrides or {}).items()}),
    )


# Layouts, resolutions and recipes: the official README table and configs; parameters and GFLOPs:
# the reference counts (all via ../shared/reference/resnet_rs.yaml `models`). Stochastic depth:
# 0.0 for 50-152 (none in their configs), 0.1 for 200+. Dropout 0.25, 0.4 for 420 and 350@320.
FAMILY: dict[str, FamilyMember] = {
    m.name: m
    for m in (
        _member(50, 35.69, {160: 4.6}, randaug_magnitude=10),
        _member(
            101,
            63.62,
            {160: 8.4, 192: 12.0},
            randaug_magnitude=10,
            overrides={192: {"randaug_magnitude": 15}},
        ),
        _member(152, 86.62, {192: 17.5, 224: 23.8, 256: 31.1}),
        _member(200, 93.21, {256: 40.2}, stochastic_depth=0.1),
        _member(270, 129.86, {256: 53.9}, stochastic_depth=0.1),
        _member(
            350,
            163.96,
            {256: 68.8, 320: 107.4},
            stochastic_depth=0.1,
            overrides={320: {"dropout": 0.4}},
        ),
        _member(420, 191.89, {320: 127.9}, dropout=0.4, stochastic_depth=0.1),
    )
}


def _lookup(name: str) -> FamilyMember:
    try:
        return FAMILY[name]
    except KeyError:
        raise SpecError(
            f"model: {name!r} is not a ResNet-RS family member; allowed: {', '.join(FAMILY)}"
        ) from None


def family_arch(name: str, resolution: int | None = None, **overrides: Any) -> ArchSpec:
    """The ArchSpec of a named member at ``resolution`` (default: its first published one).

    ``overrides`` replace other ArchSpec fields (``num_classes=10``, ``in_channels=1``, ...);
    the layout is the member's and cannot be overridden.
    """
    member = _lookup(name)
    if "layout" in overrides or "depth" in overrides:
        raise SpecError(
            f"{name}: the layout is fixed by the name; use build_model(ArchSpec(...)) "
            "for another layout"
        )
    return ArchSpec(
        layout=member.layout,
        resolution=member.resolution if resolution is None else resolution,
        **overrides,
    )


def create_family_model(
    name: str,
    *,
    resolution: int | None = None,
    dropout: float | None = None,
    stochastic_depth: float | None = None,
    **arch_overrides: Any,
) -> ResNetRS:
    """Build a named member. ``dropout``/``stochastic_depth`` default to the published recipe of
    the variant at ``resolution``; other keywords replace ArchSpec fields (1000 classes default)."""
    member = _lookup(name)
    arch = family_arch(name, resolution, **arch_overrides)
    recipe = member.recipe_at(arch.resolution)
    return build_model(
        arch,
        dropout=recipe["dropout"] if dropout is None else dropout,
        stochastic_depth=(
            recipe["stochastic_depth"] if stochastic_depth is None else stochastic_depth
        ),
    )


def resnetrs50(**kwargs: Any) -> ResNetRS:
    """ResNet-RS-50, [3, 4, 6, 3], 160 px, dropout 0.25 (Bello et al. 2021, arXiv 2103.07579)."""
    return create_family_model("resnetrs50", **kwargs)


def resnetrs101(**kwargs: Any) -> ResNetRS:
    """ResNet-RS-101, [3, 4, 23, 3], 160 px (also 192), dropout 0.25."""
    return create_family_model("resnetrs101", **kwargs)


def resnetrs152(**kwargs: Any) -> ResNetRS:
    """ResNet-RS-152, [3, 8, 36, 3], 192 px (also 224, 256), dropout 0.25."""
    return create_family_model("resnetrs152", **kwargs)


def resnetrs200(**kwargs: Any) -> ResNetRS:
    """ResNet-RS-200, [3, 24, 36, 3], 256 px, dropout 0.25, stochastic depth 0.1."""
    return create_family_model("resnetrs200", **kwargs)


def resnetrs270(**kwargs: Any) -> ResNetRS:
    """ResNet-RS-270, [4, 29, 53, 4], 256 px, dropout 0.25, stochastic depth 0.1."""
    return create_family_model("resnetrs270", **kwargs)


def resnetrs350(**kwargs: Any) -> ResNetRS:
    """ResNet-RS-350, [4, 36, 72, 4], 256 px (also 320, where dropout is 0.4), dropout 0.25,
    stochastic depth 0.1."""
    return create_family_model("resnetrs350", **kwargs)


def resnetrs420(**kwargs: Any) -> ResNetRS:
    """ResNet-RS-420, [4, 44, 87, 4], 320 px, dropout 0.4, stochastic depth 0.1."""
    return create_family_model("resnetrs420", **kwargs)
