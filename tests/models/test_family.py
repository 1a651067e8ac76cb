"""The published family: parameter counts and FLOPs against the reference counts, recipe defaults.

Every big model is built on the ``meta`` device (shapes only), so these tests stay fast.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from rs_search.errors import SpecError
from rs_search.models import (
    FAMILY,
    ResNetRS,
    count_flops,
    count_params,
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
from tests.models.reference import MODELS, VARIANTS

CONSTRUCTORS = {
    "resnetrs50": resnetrs50,
    "resnetrs101": resnetrs101,
    "resnetrs152": resnetrs152,
    "resnetrs200": resnetrs200,
    "resnetrs270": resnetrs270,
    "resnetrs350": resnetrs350,
    "resnetrs420": resnetrs420,
}


def test_family_lists_exactly_the_published_models() -> None:
    assert list(FAMILY) == list(MODELS) == list(CONSTRUCTORS)


@pytest.mark.parametrize("name", list(MODELS))
def test_params_match_reference(name: str) -> None:
    ours = count_params(family_arch(name))
    reference = MODELS[name]["params_m"] * 1e6
    assert ours == pytest.approx(reference, rel=1e-3), f"{name}: {ours:,} vs {reference:,.0f}"


@pytest.mark.parametrize(
    ("name", "variant"), VARIANTS, ids=[f"{n}@{v['resolution']}" for n, v in VARIANTS]
)
def test_flops_match_reference(name: str, variant: dict[str, Any]) -> None:
    ours = count_flops(family_arch(name), variant["resolution"])
    reference = variant["flops_g"] * 1e9
    assert ours == pytest.approx(reference, rel=0.02), f"{ours / 1e9:.2f} vs {variant['flops_g']}"


@pytest.mark.parametrize("name", list(MODELS))
def test_family_table_matches_reference(name: str) -> None:
    member, ref = FAMILY[name], MODELS[name]
    assert member.layout == tuple(ref["blocks"])
    assert member.params_m == ref["params_m"]
    assert member.resolutions == tuple(v["resolution"] for v in ref["variants"])
    assert member.resolution == ref["variants"][0]["resolution"]
    for variant in ref["variants"]:
        assert member.flops_g[variant["resolution"]] == variant["flops_g"]
        assert member.recipe_at(variant["resolution"]) == {
            "dropout": variant["dropout"],
            "stochastic_depth": variant["stochastic_depth"] or 0.0,
            "randaug_magnitude": variant["randaug_magnitude"],
        }


@pytest.mark.parametrize("name", list(MODELS))
def test_named_constructor_defaults(name: str) -> None:
    ref = MODELS[name]["variants"][0]
    with torch.device("meta"):
        model = CONSTRUCTORS[name]()
    assert isinstance(model, ResNetRS)
    assert model.arch == family_arch(name)
    assert model.arch.resolution == ref["resolution"]
    assert model.arch.num_classes == 1000 and model.fc.out_features == 1000
    assert model.dropout.p == ref["dropout"]
    r = ref["stochastic_depth"] or 0.0
    for stage, fraction in zip(model.stage_blocks, (0.4, 0.6, 0.8, 1.0), strict=True):
        rates = [b.drop_path.p for b in stage]
        assert rates == pytest.approx([r * fraction] * len(stage))
    assert sum(p.numel() for p in model.parameters()) == count_params(model.arch)


def test_constructor_follows_the_variant_and_overrides() -> None:
    with torch.device("meta"):
        at_320 = resnetrs350(resolution=320)
        custom = resnetrs50(num_classes=10, dropout=0.1, stochastic_depth=0.2, in_channels=1)
    assert at_320.dropout.p == 0.4  # RS-350@320 uses dropout 0.4
    assert at_320.arch.resolution == 320
    assert custom.fc.out_features == 10 and custom.dropout.p == 0.1
    assert custom.stage_blocks[3][0].drop_path.p == pytest.approx(0.2)
    first_conv = next(m for m in custom.modules() if isinstance(m, torch.nn.Conv2d))
    assert first_conv.in_channels == 1


def test_unknown_member_and_fixed_layout_are_spec_errors() -> None:
    with pytest.raises(SpecError, match="resnetrs50"):
        family_arch("resnetrs51")
    with pytest.raises(SpecError, match="layout"):
        family_arch("resnetrs50", layout=(2, 2, 2, 2))
    with pytest.raises(SpecError):
        create_family_model("resnet50")
    assert family_arch("resnetrs101", 192, num_classes=10).num_classes == 10
