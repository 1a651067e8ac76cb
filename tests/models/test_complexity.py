"""Complexity counts: the meta-device, stage-wise FLOP count against full forwards and an
independent per-layer count, the torchvision convention, and the Complexity record."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from rs_search.models import Complexity, build_model, complexity, count_flops, count_params
from rs_search.specs import ArchSpec

# Several blocks per stage, so that the stage-wise shortcut of count_flops is exercised.
SMALL = ArchSpec(layout=(3, 4, 2, 3), width=0.25, resolution=48, num_classes=10)


def _full_forward_flops(model: nn.Module, arch: ArchSpec, device: str) -> int:
    x = torch.randn(1, arch.in_channels, arch.resolution, arch.resolution, device=device)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.eval()(x)
    return int(counter.get_total_flops())


def _hook_flops(model: nn.Module, arch: ArchSpec) -> int:
    """2 x multiply-adds of every conv and linear layer, from the real output shapes."""
    total = 0

    def conv_hook(m: nn.Module, _inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        assert isinstance(m, nn.Conv2d)
        kh, kw = m.kernel_size
        total += 2 * out.numel() * (m.in_channels // m.groups) * kh * kw

    def linear_hook(m: nn.Module, _inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        assert isinstance(m, nn.Linear)
        total += 2 * out.numel() * m.in_features

    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            m.register_forward_hook(conv_hook)
        elif isinstance(m, nn.Linear):
            m.register_forward_hook(linear_hook)
    with torch.no_grad():
        model.eval()(torch.randn(1, arch.in_channels, arch.resolution, arch.resolution))
    return total


@pytest.mark.parametrize(
    "arch",
    [SMALL, dataclasses.replace(SMALL, resnet_d=False, se_ratio=0.0, in_channels=1, resolution=37)],
    ids=["resnet-rs", "classic-odd-size"],
)
def test_flops_equal_full_forward_and_per_layer_count(arch: ArchSpec) -> None:
    model = build_model(arch)
    ours = count_flops(arch)
    assert ours == _full_forward_flops(model, arch, "cpu")
    assert ours == _hook_flops(model, arch)


def test_stagewise_count_equals_full_forward_of_resnetrs50() -> None:
    arch = ArchSpec(resolution=160)
    with torch.device("meta"):
        model = build_model(arch)
    assert count_flops(arch) == _full_forward_flops(model, arch, "meta")


def test_params_equal_a_real_model() -> None:
    model = build_model(SMALL)
    assert count_params(SMALL) == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert count_params(dataclasses.replace(SMALL, resolution=96)) == count_params(SMALL)


def test_flops_follow_torchvision_convention() -> None:
    from torchvision.models import ResNet50_Weights

    gmacs = ResNet50_Weights.IMAGENET1K_V1.meta["_ops"]  # torchvision counts multiply-adds
    ours = count_flops(ArchSpec(se_ratio=0.0, resnet_d=False, resolution=224))
    assert ours == pytest.approx(2 * gmacs * 1e9, rel=1e-3)


def test_resolution_argument_and_complexity_record() -> None:
    at_64 = dataclasses.replace(SMALL, resolution=64)
    assert count_flops(SMALL, 64) == count_flops(at_64)
    assert count_flops(SMALL, 64) > count_flops(SMALL)
    record = complexity(at_64)
    assert record == Complexity(params=count_params(SMALL), flops=count_flops(at_64), resolution=64)
    assert record.params_m == pytest.approx(record.params / 1e6)
    assert record.gflops == pytest.approx(record.flops / 1e9)
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.params = 0  # type: ignore[misc]
