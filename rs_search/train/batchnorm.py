"""Batch-norm statistics that belong to the weights being evaluated ("precise BN").

In training, BN normalises each batch with its own statistics; evaluation uses running
statistics, which PyTorch updates with momentum 0.1 per forward pass and which therefore describe
the weights of the last ten or so steps, mixed with the initial (0, 1). Early in a run, when the
learning rate is high and the weights move fast, they do not describe the current weights at
all. On the quickstart space (digits, 22 steps per epoch, 8 candidates, no EMA) validation top-1
averaged 15.9% after epoch 1 and 73.6% after epoch 4 (the first rung) with the running
statistics, 57.0% and 84.0% with recomputed ones, and the rung's ranking agreed less with the
final one (Kendall tau 0.47 against 0.71); the [2,2,2,2] nets lost most
(benchmarks/RESULTS.md, "Early-epoch figures and batch-norm statistics").

The official code (tensorflow/tpu ``resnet_rs/configs/*.yaml``: ``bn_momentum: 0``,
``moving_average_decay: 0.9999``; ``resnet_main.py`` refuses a BN momentum with an EMA) replaces
the moving statistics by each batch's (TF's ``momentum`` is the decay of the moving average, so 0
is PyTorch's momentum 1.0) and lets the weight EMA average them. Measured the same way: with the
EMA that is within 1.2 points of recomputed statistics from epoch 3 on but 7.1 points off after
epoch 1; without an EMA (the quickstart's recipe) it leaves one batch's statistics, 16 points
off after epoch 1 and 1.3 after the last. Instead, before every evaluation the engine recomputes
the statistics of each evaluated module (raw weights and EMA) on a fixed set of augmented
training images (the subset the train accuracy is measured on), in train mode (each batch
normalised by its own statistics, as in training), averaged with equal weight per batch: Wu &
Johnson 2021, "Rethinking 'Batch' in BatchNorm" (arXiv 2105.07576), Sec. 3, who show the EMA of
statistics is inaccurate exactly when the weights change fast; PyTorch's
``torch.optim.swa_utils.update_bn`` does the same for one averaged model (ours feeds every
module from one decoded batch). Augmented images, as the official moving statistics see them:
recomputed on the subset preprocessed like validation instead, top-1 was up to 4.8 points
(mean over candidates) from that with the whole augmented training split, where the augmented
subset stayed within 1.0. The statistics are written into the modules, so
checkpoints and exported weights score what the curve reports; the modules' BN momentum stays
PyTorch's default, since no reported figure depends on it any more. Cost: 11-18% of a digits
epoch for the refresh and the train-eval pass together, an estimated 0.4% of an ImageNet epoch
at 160 px.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from rs_search.train.distributed import DistContext, all_reduce_sum

__all__ = ["average_over_ranks", "batch_norms", "recompute_statistics"]


def batch_norms(module: nn.Module) -> list[_BatchNorm]:
    return [m for m in module.modules() if isinstance(m, _BatchNorm)]


@torch.no_grad()
def recompute_statistics(modules: Sequence[nn.Module], batches: Iterable[Tensor]) -> int:
    """Replace the running mean and variance of every BN layer of ``modules`` by their average
    over ``batches`` (each batch through each module in train mode). Returns the batches used;
    a batch of one image is skipped (it has no variance). With no usable batch the statistics
    are left as they were. Momentum and train/eval modes are restored afterwards."""
    layers = [bn for module in modules for bn in batch_norms(module)]
    saved = [(bn.momentum, bn.running_mean.clone(), bn.running_var.clone()) for bn in layers]  # type: ignore[union-attr]
    modes = [module.training for module in modules]
    for bn in layers:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average: every batch weighs the same
    used = 0
    try:
        for module in modules:
            module.train()
        for images in batches:
            if images.shape[0] < 2:
                continue
            for module in modules:
                module(images)
            used += 1
    finally:
        for bn, (momentum, mean, var) in zip(layers, saved, strict=True):
            bn.momentum = momentum
            if used == 0:
                bn.running_mean.copy_(mean)  # type: ignore[union-attr]
                bn.running_var.copy_(var)  # type: ignore[union-attr]
        for module, training in zip(modules, modes, strict=True):
            module.train(training)
    return used


@torch.no_grad()
def average_over_ranks(modules: Sequence[nn.Module], ctx: DistContext) -> None:
    """Average the BN statistics of ``modules`` over the group (each rank recomputed them on its
    share of the subset; the mean of equal shares' means is the subset's mean). One collective."""
    if not ctx.distributed:
        return
    stats: list[Tensor] = []
    for module in modules:
        for bn in batch_norms(module):
            stats += [t for t in (bn.running_mean, bn.running_var) if t is not None]
    if not stats:
        return
    total = all_reduce_sum(torch.cat([t.detach().double().flatten().cpu() for t in stats]), ctx)
    total /= ctx.world_size
    offset = 0
    for t in stats:
        t.copy_(total[offset : offset + t.numel()].view_as(t))
        offset += t.numel()
