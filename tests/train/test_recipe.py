"""The recipe objects: weight decay groups, the LR schedule's shape, the EMA with TF warm-up."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from rs_search.errors import SpecError
from rs_search.models import build_model
from rs_search.specs import ArchSpec, RecipeSpec
from rs_search.train.recipe import (
    WarmupEma,
    build_criterion,
    build_ema,
    build_optimizer,
    build_scheduler,
    ema_decay_at,
)

TINY = ArchSpec(layout=(1, 1, 1, 1), width=0.25, resolution=16, num_classes=10)


def test_weight_decay_shrinks_kernels_but_not_bn_or_biases() -> None:
    """One SGD step with zero gradients: only weight decay moves parameters. Conv and linear
    kernels shrink by exactly lr * wd; BN weights/biases, the head bias and SE biases stay."""
    torch.manual_seed(0)
    model = build_model(TINY)
    for m in model.modules():  # make every BN gamma/beta and bias non-zero, so decay would show
        if isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, 0.7)
            nn.init.constant_(m.bias, 0.3)
        if isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
            nn.init.constant_(m.bias, 0.2)
    recipe = RecipeSpec(lr_per_256=0.1, batch_size=256, weight_decay=0.5, momentum=0.9)
    optimizer = build_optimizer(model, recipe)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()

    bn_params = {
        f"{mod_name}.{p_name}"
        for mod_name, mod in model.named_modules()
        if isinstance(mod, nn.BatchNorm2d)
        for p_name, _ in mod.named_parameters(recurse=False)
    }
    biases = {name for name, _ in model.named_parameters() if name.endswith(".bias")}
    kernels = {
        f"{mod_name}.weight"
        for mod_name, mod in model.named_modules()
        if isinstance(mod, (nn.Conv2d, nn.Linear))
    }
    assert bn_params and kernels and any("se." in b for b in biases) and "fc.bias" in biases
    for name, p in model.named_parameters():
        if name in bn_params or name in biases:
            assert torch.equal(p.detach(), before[name]), f"{name} was decayed"
        else:
            assert name in kernels
            torch.testing.assert_close(p.detach(), before[name] * (1 - 0.1 * 0.5))


def test_lr_schedule_is_linear_warmup_then_cosine_to_zero() -> None:
    steps_per_epoch, warmup_epochs, epochs = 4, 2, 10
    recipe = RecipeSpec(epochs=epochs, warmup_epochs=warmup_epochs, batch_size=512, lr_per_256=0.1)
    peak = 0.2  # 0.1 per 256 images, batch 512
    assert recipe.lr == pytest.approx(peak)
    model = nn.Linear(2, 2)
    optimizer = build_optimizer(model, recipe)
    scheduler = build_scheduler(optimizer, recipe, steps_per_epoch=steps_per_epoch)
    lrs = []
    for _ in range(epochs * steps_per_epoch):
        lrs.append(optimizer.param_groups[0]["lr"])
        assert optimizer.param_groups[1]["lr"] == lrs[-1]  # both groups follow the schedule
        optimizer.step()
        scheduler.step()
    warm = warmup_epochs * steps_per_epoch
    # Linear ramp: equal increments up to the peak, reached exactly at the end of the warm-up.
    ramp = lrs[: warm + 1]
    diffs = [b - a for a, b in zip(ramp, ramp[1:], strict=False)]
    assert all(d == pytest.approx(peak / (warm + 1)) for d in diffs)
    assert lrs[warm] == pytest.approx(peak)
    # Cosine from the peak towards zero over the remaining steps.
    total = epochs * steps_per_epoch - warm
    for k, lr in enumerate(lrs[warm:]):
        assert lr == pytest.approx(peak * 0.5 * (1 + math.cos(math.pi * k / total)), rel=1e-6)
    assert lrs[-1] < 0.01 * peak
    assert all(b <= a for a, b in zip(lrs[warm:], lrs[warm + 1 :], strict=False))


def test_warmup_must_end_before_the_run() -> None:
    recipe = RecipeSpec(epochs=3, warmup_epochs=5)
    optimizer = build_optimizer(nn.Linear(2, 2), recipe)
    with pytest.raises(SpecError, match="warmup_epochs"):
        build_scheduler(optimizer, recipe, steps_per_epoch=10)


def test_no_warmup_is_plain_cosine() -> None:
    recipe = RecipeSpec(epochs=2, warmup_epochs=0, batch_size=256, lr_per_256=0.1)
    optimizer = build_optimizer(nn.Linear(2, 2), recipe)
    scheduler = build_scheduler(optimizer, recipe, steps_per_epoch=5)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1)
    optimizer.step()
    scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(
        0.1 * 0.5 * (1 + math.cos(math.pi / 10))
    )


def test_ema_follows_tensorflow_warmup_and_averages_bn_buffers() -> None:
    """Update t uses decay min(d, (1+t)/(10+t)); BN running statistics are averaged too."""
    assert ema_decay_at(0.9999, 0) == pytest.approx(0.1)
    assert ema_decay_at(0.9999, 90) == pytest.approx(91 / 100)
    assert ema_decay_at(0.9, 10_000) == 0.9

    linear, bn = nn.Linear(3, 3, bias=False), nn.BatchNorm1d(3)
    model = nn.Sequential(linear, bn)
    ema = WarmupEma(model, decay=0.99)
    running_mean = bn.running_mean
    assert running_mean is not None
    expected_w = linear.weight.detach().clone()
    expected_mean = running_mean.clone()
    ema.update_parameters(model)  # first update copies (AveragedModel)
    for t in range(1, 30):
        with torch.no_grad():
            linear.weight.add_(1.0)
            running_mean.add_(2.0)
        d = min(0.99, (1 + t) / (10 + t))
        expected_w = d * expected_w + (1 - d) * linear.weight.detach()
        expected_mean = d * expected_mean + (1 - d) * running_mean
        ema.update_parameters(model)
        assert ema.updates == t + 1
    averaged = dict(ema.module.state_dict())
    torch.testing.assert_close(averaged["0.weight"], expected_w)
    torch.testing.assert_close(averaged["1.running_mean"], expected_mean)
    # The EMA lags the weights: it is not a copy.
    assert not torch.allclose(averaged["0.weight"], linear.weight)


def test_ema_off_when_decay_is_zero() -> None:
    assert build_ema(nn.Linear(2, 2), RecipeSpec(ema_decay=0.0)) is None
    assert isinstance(build_ema(nn.Linear(2, 2), RecipeSpec(ema_decay=0.9999)), WarmupEma)


def test_label_smoothing_in_the_loss() -> None:
    criterion = build_criterion(RecipeSpec(label_smoothing=0.1))
    logits = torch.tensor([[10.0, -10.0]])
    # A confident correct prediction still pays for the 0.05 smoothed mass on the other class.
    assert criterion(logits, torch.tensor([0])).item() == pytest.approx(0.05 * 20, rel=1e-3)
