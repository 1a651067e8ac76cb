"""The block's lean forward (in-place residual add, stochastic-depth mask folded into the SE gate)
computes exactly the plain formulation, and a training step runs no more operators than timm's.

Speed itself is measured in benchmarks/throughput.py; these check what makes it: the same
function forward and backward, and the operator counts of one step next to timm's.
"""

from __future__ import annotations

import copy
from collections import Counter

import pytest
import torch
from torch import Tensor, nn
from torch.profiler import ProfilerActivity, profile
from torchvision.ops import stochastic_depth

from rs_search.models import Bottleneck, ResNetRS, build_model
from rs_search.specs import ArchSpec
from tests.models.test_resnet import _randomize


def _plain_block(block: Bottleneck, x: Tensor) -> Tensor:
    """The block as the paper's code writes it: out-of-place SE product, torchvision's stochastic
    depth on the full map, out-of-place residual add and ReLU (this module's code before the
    in-place rewrite)."""
    shortcut = x if block.downsample is None else block.downsample(x)
    out = torch.relu(block.bn1(block.conv1(x)))
    out = torch.relu(block.bn2(block.conv2(out)))
    out = block.bn3(block.conv3(out))
    if block.se is not None:
        se = block.se
        out = out * se.gate(se.fc2(torch.relu(se.fc1(out.mean((2, 3), keepdim=True)))))
    out = stochastic_depth(out, block.drop_path.p, "row", block.drop_path.training)
    return torch.relu(out + shortcut)


def _plain_forward(model: ResNetRS, x: Tensor) -> Tensor:
    x = model.forward_stem(x)
    for stage in model.stage_blocks:
        for block in stage:
            x = _plain_block(block, x)
    return model.forward_head(x)


def _close(actual: Tensor, expected: Tensor) -> None:
    """Equal up to float rounding: the results are bitwise equal except where stochastic depth
    rides on the SE gate (``x * (g * k)`` against ``(x * g) * k``: measured within 1e-5 of the
    tensor's largest value, through the stem's gradient)."""
    scale = float(expected.detach().abs().max())
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-4 * scale + 1e-12)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("se_ratio", [0.25, 0.0], ids=["se", "no-se"])
@pytest.mark.parametrize("rate", [0.0, 0.5], ids=["no-drop", "drop"])
def test_forward_and_backward_equal_the_plain_formulation(
    rate: float, se_ratio: float, channels_last: bool
) -> None:
    arch = ArchSpec(layout=(2, 1, 1, 2), width=0.25, resolution=32, num_classes=10)
    arch = ArchSpec(**{**arch.__dict__, "se_ratio": se_ratio})
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = build_model(arch, dropout=0.2, stochastic_depth=rate)
    _randomize(model)
    model = model.to(memory_format=fmt).train()
    plain = copy.deepcopy(model)
    x = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(1)).to(memory_format=fmt)
    weights = torch.randn(16, 10, generator=torch.Generator().manual_seed(2))

    torch.manual_seed(3)  # the same dropout and stochastic-depth draws for both
    out = model(x)
    torch.manual_seed(3)
    expected = _plain_forward(plain, x)
    _close(out, expected)
    (out * weights).sum().backward()
    (expected * weights).sum().backward()
    for (name, p), q in zip(model.named_parameters(), plain.parameters(), strict=True):
        assert p.grad is not None and q.grad is not None, name
        _close(p.grad, q.grad)
    for (name, b), c in zip(model.named_buffers(), plain.buffers(), strict=True):
        torch.testing.assert_close(b, c, msg=name)  # BN statistics updated alike


def test_stochastic_depth_draws_as_torchvision() -> None:
    """Same random stream as torchvision's stochastic_depth, so a seed reproduces old runs."""
    block = build_model(ArchSpec(layout=(1, 1, 1, 1), width=0.25), stochastic_depth=0.5)
    drop = block.stage_blocks[3][0].drop_path
    x = torch.ones(4096, 2, 1, 1)
    torch.manual_seed(0)
    ours = drop(x)
    torch.manual_seed(0)
    theirs = stochastic_depth(x, drop.p, "row", training=True)
    torch.testing.assert_close(ours, theirs)
    assert 0 < int((ours == 0).all(1).sum()) < 4096  # some dropped, some kept
    drop.eval()
    assert drop(x) is x


def test_bf16_autocast_training_step_runs_in_place() -> None:
    """The in-place add needs branch and shortcut in one dtype; autocast must keep them so."""
    arch = ArchSpec(layout=(1, 1, 1, 1), width=0.25, resolution=32, num_classes=10)
    model = build_model(arch, stochastic_depth=0.5).to(memory_format=torch.channels_last).train()
    plain = copy.deepcopy(model)
    x = torch.randn(8, 3, 32, 32).to(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch.manual_seed(0)
        out = model(x)
        torch.manual_seed(0)
        expected = _plain_forward(plain, x)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out, expected, rtol=2e-2, atol=2e-2)
    out.float().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def _operator_counts(model: nn.Module, batch: int = 4, resolution: int = 64) -> Counter[str]:
    """aten operators of one training step (forward, backward), the second of two."""
    model = model.to(memory_format=torch.channels_last).train()
    x = torch.randn(batch, 3, resolution, resolution).to(memory_format=torch.channels_last)
    model(x).logsumexp(1).sum().backward()  # first step: one-off set-up stays out of the count
    model.zero_grad(set_to_none=True)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        model(x).logsumexp(1).sum().backward()
    return Counter(e.name for e in prof.events() if e.name.startswith("aten::"))


def test_training_step_runs_no_more_operators_than_timm() -> None:
    """The profile behind issue 14 (ours slower than timm's resnetrs50) showed an extra
    out-of-place residual add per block; this keeps every operator at timm's count or below
    (copies, products, additions, allocations: the ops the two nets share), ResNet-RS-50 layout
    at a small size."""
    timm = pytest.importorskip("timm", reason="timm comes with the dev extra")
    from rs_search.models import resnetrs50

    torch.manual_seed(0)
    ours = _operator_counts(resnetrs50(dropout=0.25))
    theirs = _operator_counts(timm.create_model("resnetrs50", drop_rate=0.25))
    extra = {op: (n, theirs[op]) for op, n in ours.items() if n > theirs[op]}
    assert not extra, f"ops ours runs more often than timm (ours, timm): {extra}"
    for op in ("aten::add_", "aten::mul", "aten::copy_", "aten::empty"):
        assert ours[op] > 0  # the profile saw the step
