"""The builder: the same network as timm's resnetrs50 and torchvision's resnet50, width rounding,
zero-initialised residual branches, stochastic depth per stage, and real forwards of tiny nets."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from rs_search.models import (
    Bottleneck,
    SqueezeExcite,
    build_model,
    count_params,
    make_divisible,
    resnetrs50,
    stage_planes,
    stem_widths,
)
from rs_search.specs import ArchSpec
from tests.models.reference import REFERENCE

TINY = ArchSpec(layout=(1, 1, 1, 1), width=0.25, resolution=32, num_classes=10)
TINY_DEEPER = ArchSpec(layout=(2, 2, 1, 2), width=0.25, resolution=32, num_classes=10)


def _convs(module: nn.Module) -> list[nn.Conv2d]:
    return [m for m in module.modules() if isinstance(m, nn.Conv2d)]


def _shortcut(block: Bottleneck) -> nn.Sequential:
    assert isinstance(block.downsample, nn.Sequential)
    return block.downsample


def _randomize(model: nn.Module, seed: int = 0) -> None:
    """Give every parameter and BN statistic a random value, so that zero-initialised gammas do
    not hide a difference between two networks."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if not tensor.is_floating_point():
                continue
            if name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=gen) + 0.5)
            else:
                tensor.copy_(torch.randn(tensor.shape, generator=gen) * 0.1)


def _same_network(ours: nn.Module, theirs: nn.Module, resolution: int = 64) -> None:
    ours_shapes = [(n, tuple(p.shape)) for n, p in ours.named_parameters()]
    theirs_shapes = [(n, tuple(p.shape)) for n, p in theirs.named_parameters()]
    assert len(ours_shapes) == len(theirs_shapes)
    for mine, other in zip(ours_shapes, theirs_shapes, strict=True):
        assert mine == other
    assert [(n, b.shape) for n, b in ours.named_buffers()] == [
        (n, b.shape) for n, b in theirs.named_buffers()
    ]
    # Same layers in the same order, and the same function: load their weights, compare outputs.
    _randomize(theirs)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    ours.eval()
    theirs.eval()
    x = torch.randn(2, 3, resolution, resolution, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-4, atol=1e-4)


def test_resnetrs50_is_timms_resnetrs50() -> None:
    timm = pytest.importorskip("timm", reason="timm comes with the dev extra")
    theirs = timm.create_model("resnetrs50", pretrained=False)
    ours = resnetrs50()
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())
    _same_network(ours, theirs)


def test_plain_depth50_is_torchvision_resnet50() -> None:
    from torchvision.models import ResNet50_Weights, resnet50

    arch = ArchSpec(se_ratio=0.0, resnet_d=False)
    published = REFERENCE["torchvision_resnet50_params"]
    assert published == ResNet50_Weights.IMAGENET1K_V1.meta["num_params"]
    assert count_params(arch) == published
    ours = build_model(arch)
    assert sum(p.numel() for p in ours.parameters()) == published
    _same_network(ours, resnet50())


def test_tiny_forward_and_backward() -> None:
    model = build_model(TINY, dropout=0.2, stochastic_depth=0.2)
    x = torch.randn(4, 3, TINY.resolution, TINY.resolution)
    out = model(x)
    assert out.shape == (4, 10)
    out.logsumexp(1).mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(float(g.abs().sum()) > 0 for g in grads if g is not None)


@pytest.mark.parametrize(
    "arch",
    [
        ArchSpec(layout=(1, 1, 1, 1), width=0.25, resolution=33, num_classes=7, in_channels=1),
        ArchSpec(layout=(1, 1, 1, 1), width=0.25, resolution=32, resnet_d=False, se_ratio=0.0),
    ],
    ids=["odd-resolution-1-channel", "classic"],
)
def test_variants_forward(arch: ArchSpec) -> None:
    model = build_model(arch).eval()
    with torch.no_grad():
        out = model(torch.randn(2, arch.in_channels, arch.resolution, arch.resolution))
    assert out.shape == (2, arch.num_classes)
    has_se = any(isinstance(m, SqueezeExcite) for m in model.modules())
    assert has_se == (arch.se_ratio > 0)


def test_resnet_d_stem_and_shortcuts() -> None:
    model = build_model(TINY_DEEPER)
    stem = _convs(model.conv1)
    assert [m.out_channels for m in stem] == [8, 8, 16]
    assert [m.stride for m in stem] == [(2, 2), (1, 1), (1, 1)]
    assert [m.stride for m in _convs(model.maxpool)] == [(2, 2)]  # the max pool's replacement
    assert isinstance(_shortcut(model.stage_blocks[0][0])[0], nn.Identity)  # only channels change
    for stage in model.stage_blocks[1:]:
        pool, conv, _bn = _shortcut(stage[0])
        assert isinstance(pool, nn.AvgPool2d) and pool.kernel_size == 2 and pool.stride == 2
        assert _convs(conv)[0].stride == (1, 1) and _convs(conv)[0].kernel_size == (1, 1)
        assert stage[0].conv2.stride == (2, 2) and stage[0].conv1.stride == (1, 1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert m.eps == 1e-5


def test_se_reduces_to_a_quarter_of_block_output() -> None:
    model = build_model(ArchSpec(layout=(1, 1, 1, 1)), stochastic_depth=0.0)
    for stage, planes in zip(model.stage_blocks, (64, 128, 256, 512), strict=True):
        se = stage[0].se
        assert se is not None
        assert se.fc1.in_channels == 4 * planes and se.fc1.out_channels == planes
        assert se.fc1.bias is not None and se.fc2.bias is not None


def test_last_bn_gamma_is_zero_and_blocks_start_as_identity() -> None:
    model = build_model(TINY_DEEPER).eval()
    blocks = [m for m in model.modules() if isinstance(m, Bottleneck)]
    assert len(blocks) == sum(TINY_DEEPER.layout)
    for block in blocks:
        assert torch.count_nonzero(block.bn3.weight) == 0
        assert torch.all(block.bn1.weight == 1) and torch.all(block.bn2.weight == 1)
    with torch.no_grad():
        for block in blocks:
            x = torch.rand(3, block.conv1.in_channels, 4, 4)  # a block's input follows a ReLU
            shortcut = x if block.downsample is None else torch.relu(block.downsample(x))
            torch.testing.assert_close(block(x), shortcut)


def test_head_init() -> None:
    model = build_model(ArchSpec(layout=(1, 1, 1, 1), num_classes=1000))
    assert torch.all(model.fc.bias == 0)
    assert float(model.fc.weight.detach().std()) == pytest.approx(0.01, rel=0.05)


@pytest.mark.parametrize("rate", [0.0, 0.1, 0.5])
def test_stochastic_depth_rate_per_stage(rate: float) -> None:
    model = build_model(TINY_DEEPER, stochastic_depth=rate)
    for stage, fraction in zip(model.stage_blocks, (0.4, 0.6, 0.8, 1.0), strict=True):
        assert [b.drop_path.p for b in stage] == pytest.approx([rate * fraction] * len(stage))


@pytest.mark.parametrize("stage_index", [0, 3])
def test_stochastic_depth_drops_samples_in_train_mode_only(stage_index: int) -> None:
    torch.manual_seed(0)
    rate = 0.5
    p = rate * (stage_index + 2) / 5
    model = build_model(TINY_DEEPER, stochastic_depth=rate)
    block = model.stage_blocks[stage_index][-1]  # identity shortcut
    assert block.downsample is None
    nn.init.ones_(block.bn3.weight)  # a non-zero branch, so a kept branch is visible
    block.eval()
    block.drop_path.train()  # deterministic BN, random stochastic depth
    bn3_out: dict[str, torch.Tensor] = {}
    se = block.se
    assert se is not None
    # The block folds the drop mask into the SE gate, so the undropped branch is recomputed from
    # the SE's input (the last BN's output).
    se.register_forward_hook(lambda _m, inputs, _out: bn3_out.__setitem__("x", inputs[0].clone()))
    x = torch.rand(2000, block.conv1.in_channels, 2, 2)
    with torch.no_grad():
        out = block(x)
        branch = {"out": se(bn3_out["x"])}
        dropped = torch.isclose(out, x).flatten(1).all(1)
        kept = torch.isclose(out, torch.relu(x + branch["out"] / (1 - p)), atol=1e-5)
        kept = kept.flatten(1).all(1)
        assert torch.all(dropped ^ kept)  # each sample: branch dropped, or kept and scaled
        assert float(dropped.float().mean()) == pytest.approx(p, abs=0.05)

        block.drop_path.eval()
        torch.testing.assert_close(block(x), torch.relu(x + branch["out"]))


def test_model_is_deterministic_in_eval_and_random_in_train() -> None:
    torch.manual_seed(0)
    model = build_model(TINY_DEEPER, stochastic_depth=0.5)
    _randomize(model)
    plain = build_model(TINY_DEEPER)
    plain.load_state_dict(model.state_dict())
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        model.eval()
        plain.eval()
        torch.testing.assert_close(model(x), plain(x))  # stochastic depth off in eval
        model.train()
        for m in model.modules():  # keep BN statistics fixed; only stochastic depth is random
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
        assert not torch.allclose(model(x), model(x))


@pytest.mark.parametrize(
    ("value", "expected"),
    [(64, 64), (48.0, 48), (19.2, 24), (16.0, 16), (2.4, 8), (38.4, 40), (166.4, 168), (12.0, 16)],
)
def test_make_divisible(value: float, expected: int) -> None:
    assert make_divisible(value) == expected


@pytest.mark.parametrize("width", [0.25, 0.3, 0.6, 0.75, 1.0, 1.3, 2.0])
def test_width_multiplier_rounds_every_conv_to_eight(width: float) -> None:
    arch = ArchSpec(layout=(1, 1, 1, 1), width=width)
    with torch.device("meta"):
        model = build_model(arch)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(m.out_channels % 8 == 0 for m in convs)
    for target, planes in zip((64, 128, 256, 512), stage_planes(arch), strict=True):
        assert planes % 8 == 0 and 0.9 * target * width <= planes < target * width + 8
    stem_mid, stem_out = stem_widths(arch)
    assert _convs(model.conv1)[0].out_channels == stem_mid and model.bn1.num_features == stem_out
    assert stem_mid >= 0.9 * 32 * width and stem_out >= 0.9 * 64 * width


def test_width_examples() -> None:
    assert stage_planes(ArchSpec(width=0.75)) == (48, 96, 192, 384)
    assert stem_widths(ArchSpec(width=0.75)) == (24, 48)
    assert stage_planes(ArchSpec(width=0.3)) == (24, 40, 80, 152)  # 153.6 -> 152
    assert stage_planes(ArchSpec(width=2.0)) == (128, 256, 512, 1024)
    assert stem_widths(ArchSpec(resnet_d=False, width=0.5)) == (32, 32)
    assert math.isclose(count_params(ArchSpec(width=1.0)) / 1e6, 35.69, rel_tol=1e-3)
