"""One training step (issue 14): no copy from the host inside a step, the EMA as AveragedModel
computes it, micro-batches that add up to the large batch's update, uint8 batches normalised on
the device exactly as the float path did."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from rs_search.models import build_model
from rs_search.specs import ArchSpec, RecipeSpec
from rs_search.train.augment import AugmentPolicy, eval_transform, train_transform
from rs_search.train.data import DIGITS_POLICY, uint8_output
from rs_search.train.recipe import (
    WarmupEma,
    build_criterion,
    build_ema,
    build_optimizer,
    ema_decay_at,
)
from rs_search.train.step import DeviceNormalize, RunningSums, accumulate_gradients

ARCH = ArchSpec(layout=(1, 1, 1, 1), width=0.25, resolution=16, num_classes=10)
RECIPE = RecipeSpec(epochs=2, batch_size=8, ema_decay=0.99, dropout=0.0, stochastic_depth=0.0)


class _CopyOps(TorchDispatchMode):
    def __init__(self, seen: list[str]) -> None:
        super().__init__()
        self.seen = seen

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        inputs = [t.device.type for t in tree_flatten((args, kwargs))[0] if torch.is_tensor(t)]
        outputs = [t.device.type for t in tree_flatten(out)[0] if torch.is_tensor(t)]
        if "cpu" in inputs and "meta" in outputs:
            self.seen.append(str(func))
        return out


class _Factories(TorchFunctionMode):
    def __init__(self, seen: list[str]) -> None:
        super().__init__()
        self.seen = seen

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func in (torch.tensor, torch.as_tensor) and str(kwargs.get("device", "cpu")) != "cpu":
            self.seen.append(f"torch.{func.__name__}(device={kwargs['device']})")
        return func(*args, **kwargs)


def _record(step: Callable[[], object]) -> list[str]:
    """Every copy from the CPU onto the meta device, which stands in for a GPU, while ``step``
    runs: at the operator level (``x.to(device)``) and at tensor creation
    (``torch.tensor(..., device=)``). On CUDA each is a copy from pageable memory that waits
    for the device to finish its queued work."""
    seen: list[str] = []
    with _Factories(seen), _CopyOps(seen):
        step()
    return seen


def test_a_training_step_copies_nothing_from_the_host() -> None:
    meta = torch.device("meta")
    net = build_model(ARCH).to(meta).to(memory_format=torch.channels_last)
    ema = build_ema(net, RECIPE)
    assert ema is not None
    optimizer = build_optimizer(net, RECIPE)
    criterion = build_criterion(RECIPE)
    sums = RunningSums(meta)
    normalize = DeviceNormalize((0.5, 0.4, 0.3), (0.2, 0.2, 0.2), meta)
    images = normalize(torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8))
    labels = torch.randint(0, 10, (8,)).to(meta)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        accumulate_gradients(
            net, images, labels, criterion=criterion, micro_batch=4, amp=None, sums=sums
        )
        optimizer.step()
        ema.update_parameters(net)

    for _ in range(3):  # the first EMA update copies; later ones average
        assert _record(step) == []
    assert ema.updates == 3 and sums.count == 24
    # The detector sees what the engine used to do: AveragedModel's n_averaged.to(device) per
    # step, and a counter made with torch.tensor(..., device=) per step.
    assert "aten._to_copy.default" in _record(lambda: AveragedModel.update_parameters(ema, net))
    old_counter = _record(lambda: torch.tensor(8, dtype=torch.float64, device=meta))
    assert old_counter == ["torch.tensor(device=meta)"]


def test_ema_update_is_averaged_models_arithmetic() -> None:
    torch.manual_seed(0)
    net = build_model(ARCH)
    ours = WarmupEma(net, decay=0.9)
    theirs = copy.deepcopy(ours)
    x = torch.randn(4, 3, 16, 16)
    for _ in range(4):
        net.train()
        net(x)  # moves the BN running statistics (float) and num_batches_tracked (long)
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p) * 0.1)
        theirs.multi_avg_fn = get_ema_multi_avg_fn(ema_decay_at(0.9, theirs.updates))
        AveragedModel.update_parameters(theirs, net)
        ours.update_parameters(net)
    assert ours.updates == theirs.updates == 4
    for (name, a), b in zip(ours.state_dict().items(), theirs.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def _bn_eval(model: torch.nn.Module) -> torch.nn.Module:
    """Train mode with every BatchNorm on its running statistics: each image's output then
    depends on that image alone, which is what makes the comparison exact up to rounding."""
    model.train()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.eval()
    return model


@pytest.mark.parametrize("micro_batch", [4, 3, 1])  # 3: micro-batches of 3, 3 and 2 images
def test_micro_batches_give_the_large_batch_update(micro_batch: int) -> None:
    torch.manual_seed(0)
    whole = build_model(ARCH)
    with torch.no_grad():  # zero-initialised last gammas would leave most gradients at zero
        for module in whole.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
    parts = copy.deepcopy(whole)
    criterion = build_criterion(RECIPE)
    images = torch.randn(8, 3, 16, 16)
    labels = torch.randint(0, 10, (8,))
    results = []
    for model, micro in ((whole, None), (parts, micro_batch)):
        optimizer = build_optimizer(_bn_eval(model), RECIPE)
        sums = RunningSums(torch.device("cpu"))
        optimizer.zero_grad(set_to_none=True)
        accumulate_gradients(
            model, images, labels, criterion=criterion, micro_batch=micro, amp=None, sums=sums
        )
        optimizer.step()
        results.append(sums.host())
    before = build_model(ARCH).state_dict()
    moved = 0
    for (name, a), b in zip(whole.state_dict().items(), parts.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
        moved += int(not torch.equal(a, before[name]) and a.is_floating_point())
    assert moved > 10  # the step changed the weights; the comparison is not of two copies
    torch.testing.assert_close(results[0], results[1])  # the same loss sum, hits and count
    assert results[0][2].item() == 8


@pytest.mark.parametrize(
    ("policy", "channels"), [(AugmentPolicy(), 3), (DIGITS_POLICY, 1), (DIGITS_POLICY, 3)]
)
def test_uint8_batches_normalised_on_the_device_equal_the_float_path(
    policy: AugmentPolicy, channels: int
) -> None:
    mean, std = policy.channel_stats(channels)
    normalize = DeviceNormalize(mean, std, torch.device("cpu"))
    source = torch.randint(0, 256, (channels, 37, 29), dtype=torch.uint8)
    for make in (
        lambda: train_transform(
            resolution=24,
            channels=channels,
            randaug_layers=2,
            randaug_magnitude=10,
            policy=policy,
        ),
        lambda: eval_transform(resolution=24, channels=channels, policy=policy),
    ):
        float_tf, uint8_tf = make(), uint8_output(make())
        for seed in range(4):  # the same random crop, flip and RandAugment ops on both paths
            torch.manual_seed(seed)
            expected = float_tf(source)
            torch.manual_seed(seed)
            raw = uint8_tf(source)
            assert raw.dtype == torch.uint8 and type(raw) is torch.Tensor
            got = normalize(raw.unsqueeze(0))[0]
            assert expected.dtype == got.dtype == torch.float32
            assert torch.equal(got, expected)
