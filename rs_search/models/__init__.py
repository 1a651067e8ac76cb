"""ResNet-RS models: one builder for every ArchSpec, the named family, and complexity counts.

``build_model(arch, dropout=..., stochastic_depth=...)`` builds any candidate; ``resnetrs50()`` ...
``resnetrs420()`` build the published members with their published recipe regularisation;
``count_params`` / ``count_flops`` / ``complexity`` measure an ArchSpec without allocating weights.
"""

from rs_search.models.complexity import Complexity, complexity, count_flops, count_params
from rs_search.models.family import (
    FAMILY,
    FamilyMember,
    create_family_model,
    family_arch,
    resnetrs50,
    resnetrs101,
    resnetrs152,
    resnetrs200,
    resnetrs270,
    resnetrs350,
    resnetrs420,
)
from rs_search.models.resnet import (
    Bottleneck,
    ResNetRS,
    SqueezeExcite,
    build_model,
    make_divisible,
    stage_drop_rates,
    stage_planes,
    stem_widths,
)

__all__ = [
    "FAMILY",
    "Bottleneck",
    "Complexity",
    "FamilyMember",
    "ResNetRS",
    "SqueezeExcite",
    "build_model",
    "complexity",
    "count_flops",
    "count_params",
    "create_family_model",
    "family_arch",
    "make_divisible",
    "resnetrs50",
    "resnetrs101",
    "resnetrs152",
    "resnetrs200",
    "resnetrs270",
    "resnetrs350",
    "resnetrs420",
    "stage_drop_rates",
    "stage_planes",
    "stem_widths",
]
