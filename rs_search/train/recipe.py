"""The ResNet-RS training recipe as torch objects: optimizer, LR schedule, loss, EMA.

Bello et al. 2021 (arXiv 2103.07579) Sec. 4.2 and the official configs (tensorflow/tpu
``resnet_rs/configs``, TF2 Model Garden ``imagenet_resnetrs*.yaml``; figures in
``shared/reference/resnet_rs.yaml``):

* SGD, momentum 0.9 (Nesterov in the TF1 release, plain in TF2: ``RecipeSpec.nesterov``).
* Peak LR 0.1 per 256 images, scaled linearly with the global batch (``RecipeSpec.lr``).
* Linear warm-up (5 epochs) then cosine decay to zero, stepped every iteration (TF2 config).
* Weight decay 4e-5 on conv and dense kernels only: BN parameters and biases are excluded.
  TF's L2 loss ``wd/2 * ||w||^2`` has gradient ``wd * w``, which is what SGD's coupled
  ``weight_decay`` adds, so the value carries over unchanged.
* Label smoothing 0.1.
* EMA of the weights and the BN statistics, decay 0.9999 with TensorFlow's warm-up
  ``min(decay, (1 + t) / (10 + t))`` (``tf.train.ExponentialMovingAverage(num_updates=step)``);
  without the warm-up a 0.9999 average of a few-hundred-step run would still be mostly the
  random initialisation. Evaluation uses the EMA.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.optim import SGD, Optimizer
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, LRScheduler, SequentialLR
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from rs_search.errors import SpecError
from rs_search.specs import RecipeSpec

__all__ = [
    "WarmupEma",
    "build_criterion",
    "build_ema",
    "build_optimizer",
    "build_scheduler",
    "ema_decay_at",
    "param_groups",
]


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, object]]:
    """Two SGD parameter groups: kernels (conv/linear weights, ndim > 1) with weight decay;
    BN weights/biases and every bias (ndim <= 1) without it (the TF2 Model Garden rule:
    ``l2_weight_decay`` on kernels only)."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for param in model.parameters():
        if not param.requires_grad:
            continue
        (decay if param.ndim > 1 else no_decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, recipe: RecipeSpec) -> Optimizer:
    """SGD with momentum at the recipe's peak LR (the scheduler scales it per step)."""
    return SGD(
        param_groups(model, recipe.weight_decay),
        lr=recipe.lr,
        momentum=recipe.momentum,
        nesterov=recipe.nesterov and recipe.momentum > 0,
    )


def build_scheduler(
    optimizer: Optimizer, recipe: RecipeSpec, *, steps_per_epoch: int
) -> LRScheduler:
    """Per-step schedule over all ``recipe.epochs``: linear warm-up from ``lr / (W + 1)`` to the
    peak in ``W = warmup_epochs * steps_per_epoch`` steps, then cosine decay to zero.

    The schedule always spans the full recipe, also when a search stops a trial at a rung, so a
    trial's first epochs are the same whatever its final budget.
    """
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch: {steps_per_epoch} must be >= 1")
    if recipe.warmup_epochs >= recipe.epochs:
        raise SpecError(
            f"recipe.warmup_epochs ({recipe.warmup_epochs}) must be smaller than recipe.epochs "
            f"({recipe.epochs}): the run would never leave the warm-up"
        )
    total = recipe.epochs * steps_per_epoch
    warmup = recipe.warmup_epochs * steps_per_epoch
    cosine = CosineAnnealingLR(optimizer, T_max=total - warmup, eta_min=0.0)
    if warmup == 0:
        return cosine
    ramp = LinearLR(optimizer, start_factor=1.0 / (warmup + 1), end_factor=1.0, total_iters=warmup)
    return SequentialLR(optimizer, [ramp, cosine], milestones=[warmup])


def build_criterion(recipe: RecipeSpec) -> nn.CrossEntropyLoss:
    """Cross-entropy with the recipe's label smoothing (used for train and val loss alike, so
    that their gap compares like with like)."""
    return nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)


def ema_decay_at(decay: float, updates: int) -> float:
    """TensorFlow's EMA warm-up: ``min(decay, (1 + t) / (10 + t))`` after ``t`` updates."""
    return min(decay, (1.0 + updates) / (10.0 + updates))


class WarmupEma(AveragedModel):
    """``AveragedModel`` (weights and buffers) with ``get_ema_multi_avg_fn`` at the warmed-up decay.

    ``n_averaged`` (a buffer, so it is saved and restored with the state dict) counts updates;
    it stays on the CPU (``AveragedModel`` registers it there when built without ``device``),
    so reading it costs no device synchronisation. The first update copies the model, as
    ``AveragedModel`` does; update ``t >= 1`` uses decay ``ema_decay_at(decay, t)``.

    ``update_parameters`` does ``AveragedModel``'s work without its per-step
    ``n_averaged.to(device)``: a copy from pageable host memory to a CUDA device waits for the
    device, so every training step waited for the GPU (issue 14). The EMA function ignores that
    argument; the arithmetic is the same ``torch._foreach_lerp_``.
    """

    def __init__(self, model: nn.Module, *, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema decay: {decay} is out of range; allowed: 0 < decay < 1")
        super().__init__(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
        self.decay = decay

    @property
    def updates(self) -> int:
        return int(self.n_averaged)

    @torch.no_grad()
    def update_parameters(self, model: nn.Module) -> None:
        ours = [*self.module.parameters(), *self.module.buffers()]
        theirs = [t.detach() for t in (*model.parameters(), *model.buffers())]
        if self.updates == 0:
            for mine, source in zip(ours, theirs, strict=True):
                mine.detach().copy_(source)
        else:
            average = get_ema_multi_avg_fn(ema_decay_at(self.decay, self.updates))
            groups: dict[tuple[torch.device, torch.dtype], tuple[list[Tensor], list[Tensor]]] = {}
            for mine, source in zip(ours, theirs, strict=True):
                pair = groups.setdefault((mine.device, mine.dtype), ([], []))
                pair[0].append(mine.detach())
                pair[1].append(source)
            for mine_list, source_list in groups.values():
                average(mine_list, source_list, None)
        self.n_averaged += 1


def build_ema(model: nn.Module, recipe: RecipeSpec) -> WarmupEma | None:
    """The EMA of ``model`` (on the model's device), or None when ``recipe.ema_decay`` is 0."""
    if recipe.ema_decay == 0.0:
        return None
    return WarmupEma(model, decay=recipe.ema_decay)


def current_lr(optimizer: Optimizer) -> float:
    """The LR of the first parameter group (all groups share it)."""
    return float(optimizer.param_groups[0]["lr"])
