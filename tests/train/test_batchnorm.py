"""Batch-norm statistics recomputed for the weights being evaluated (rs_search.train.batchnorm):
the running statistics become the batches' average, stale statistics of changed weights are
replaced, nothing else changes, and a 2-rank gloo group ends with the same averaged figures."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from rs_search.train.batchnorm import batch_norms, recompute_statistics

from .test_group import finish, start_group


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 3, 1), nn.BatchNorm2d(3), nn.ReLU(), nn.BatchNorm2d(3))


def _batches(count: int, size: int = 8, *, seed: int = 1, vary: bool = True) -> list[torch.Tensor]:
    """``count`` batches; with ``vary`` each from another distribution (batch statistics that
    differ), else all from one."""
    gen = torch.Generator().manual_seed(seed)
    return [
        torch.randn(size, 2, 5, 5, generator=gen) * (1 + i * vary) + i * vary for i in range(count)
    ]


def test_statistics_become_the_average_of_the_batches_statistics() -> None:
    net = _net().eval()
    bn = net[1]
    assert isinstance(bn, nn.BatchNorm2d)
    batches = _batches(3)
    with torch.no_grad():
        outs = [net[0](b) for b in batches]  # what the first BN sees
    mean = torch.stack([o.mean(dim=(0, 2, 3)) for o in outs]).mean(0)
    var = torch.stack([o.transpose(0, 1).flatten(1).var(dim=1) for o in outs]).mean(0)
    used = recompute_statistics([net], [*batches, torch.randn(1, 2, 5, 5)])  # 1 image: skipped
    assert used == 3
    torch.testing.assert_close(bn.running_mean, mean)
    torch.testing.assert_close(bn.running_var, var)  # unbiased per batch, as PyTorch keeps it
    assert bn.momentum == 0.1 and not net.training  # momentum and mode restored


def test_stale_statistics_of_changed_weights_are_replaced() -> None:
    """The running statistics of a net whose weights then moved (as early in training, at a high
    learning rate) misnormalise in eval mode; recomputed, they normalise a new batch of the same
    data to mean 0 and variance 1, as training's batch statistics did."""
    net = _net()
    net.train()
    with torch.no_grad():
        for b in _batches(20, vary=False):
            net(b)  # running statistics of these weights
        net[0].weight.mul_(10.0)  # the weights move
    probe = _batches(1, size=256, seed=2, vary=False)[0]
    net.eval()
    with torch.no_grad():
        stale = net[1](net[0](probe))
    assert stale.var(dim=(0, 2, 3)).min() > 10  # the old variance cannot normalise the new weights
    recompute_statistics([net], _batches(20, vary=False))
    with torch.no_grad():
        fresh = net[1](net[0](probe))
    torch.testing.assert_close(fresh.mean(dim=(0, 2, 3)), torch.zeros(3), atol=0.3, rtol=0)
    torch.testing.assert_close(fresh.var(dim=(0, 2, 3)), torch.ones(3), atol=0.3, rtol=0)


def test_every_module_gets_each_batch_and_keeps_its_mode() -> None:
    a, b = _net().train(), _net().eval()
    with torch.no_grad():
        b[0].weight.mul_(2.0)
    recompute_statistics([a, b], _batches(2))
    assert a.training and not b.training
    ratio = batch_norms(b)[0].running_var / batch_norms(a)[0].running_var
    torch.testing.assert_close(ratio, torch.full((3,), 4.0))  # each from its own weights


def test_no_usable_batch_leaves_the_statistics() -> None:
    net = _net()
    before = [t.clone() for t in net.buffers()]
    assert recompute_statistics([net], [torch.randn(1, 2, 5, 5)]) == 0
    after = list(net.buffers())
    for old, new in zip(before[:2], after[:2], strict=True):  # mean and var of the first BN
        assert torch.equal(old, new)


GROUP_SCRIPT = textwrap.dedent(
    """
    import sys
    import torch
    from torch import nn
    from rs_search.train.batchnorm import average_over_ranks, recompute_statistics
    from rs_search.train.distributed import init_from_env, leave_group

    torch.set_num_threads(1)
    ctx = init_from_env("cpu")
    torch.manual_seed(0)  # the same weights on both ranks
    net = nn.Sequential(nn.Conv2d(2, 3, 1), nn.BatchNorm2d(3))
    gen = torch.Generator().manual_seed(10 + ctx.rank)  # each rank its own share of images
    shift = 4.0 * ctx.rank
    recompute_statistics([net], [torch.randn(6, 2, 4, 4, generator=gen) + shift for _ in range(2)])
    mine = net[1].running_mean.tolist() + net[1].running_var.tolist()
    average_over_ranks([net], ctx)
    both = net[1].running_mean.tolist() + net[1].running_var.tolist()
    print("mine", " ".join(f"{v:.6f}" for v in mine), flush=True)
    print("both", " ".join(f"{v:.6f}" for v in both), flush=True)
    leave_group()
    """
)


@pytest.mark.slow
def test_ranks_average_their_statistics(tmp_path: Path) -> None:
    procs = start_group("bn", tmp_path, script=GROUP_SCRIPT)
    outputs = finish(procs, timeout=120)

    def row(out: str, name: str) -> torch.Tensor:
        line = next(x for x in out.splitlines() if x.startswith(name + " "))
        return torch.tensor([float(v) for v in line.split()[1:]])

    mine = [row(out, "mine") for out in outputs]
    both = [row(out, "both") for out in outputs]
    assert not torch.allclose(mine[0], mine[1])  # the shares differ
    torch.testing.assert_close(both[0], both[1], rtol=0, atol=0)  # one model on every rank
    torch.testing.assert_close(both[0], (mine[0] + mine[1]) / 2, rtol=0, atol=2e-6)
