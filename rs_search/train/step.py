"""What one training step does with one batch, free of host synchronisation.

* :class:`DeviceNormalize`: the loader delivers uint8 images; they are copied to the device as
  uint8 (a quarter of the bytes) and scaled and normalised there, with the same operations in
  the same order as torchvision's ``ToDtype(float32, scale=True)`` and ``Normalize``, so the
  model sees bit for bit what the float path gave it.
* :func:`accumulate_gradients`: the forward and backward passes of a batch in micro-batches,
  each micro-batch's loss weighted by its share of the batch, so the summed gradients are the
  large batch's (the paper's global batch of 4096 on a device that holds fewer images). Under
  DDP only the last micro-batch all-reduces (``no_sync``). BatchNorm normalises each
  micro-batch with its own statistics, as each replica of a data-parallel run without
  synchronised BN normalises its own share of the global batch (DDP here; the global batch is
  never normalised as a whole), and its running statistics take one momentum update per
  micro-batch, so ``k`` per optimizer step instead of one.
* :class:`RunningSums`: the epoch's loss and correct counts stay on the device; the image count
  is a host integer (the batch size is known without asking the device).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = ["DeviceNormalize", "RunningSums", "StepOutcome", "accumulate_gradients"]


class DeviceNormalize:
    """uint8 ``(N, C, H, W)`` on the host -> normalised float32 channels_last on ``device``."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], device: torch.device) -> None:
        # Built once: a tensor made from Python numbers on every step would be a blocking copy.
        self.mean = torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1).to(device)
        self.std = torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1).to(device)
        self.device = device

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        assert images.dtype == torch.uint8, f"loader batches are uint8, not {images.dtype}"
        x = images.to(self.device, non_blocking=True, memory_format=torch.channels_last)
        x = x.to(torch.float32).mul_(1.0 / 255)  # torchvision's to_dtype_image(scale=True)
        return x.sub_(self.mean).div_(self.std)  # torchvision's normalize_image


@dataclass
class RunningSums:
    """Loss sum and correct count on the device (float64); images counted on the host."""

    device: torch.device
    values: torch.Tensor = field(init=False)
    count: int = 0

    def __post_init__(self) -> None:
        self.values = torch.zeros(2, dtype=torch.float64, device=self.device)

    def add(self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        with torch.no_grad():
            self.values += torch.stack(
                [
                    loss.detach().double() * labels.numel(),
                    (logits.argmax(1) == labels).sum().double(),
                ]
            )
        self.count += labels.numel()

    def host(self) -> torch.Tensor:
        """``[loss_sum, correct, count]`` on the CPU (one device synchronisation)."""
        loss_sum, correct = self.values.cpu().tolist()
        return torch.tensor([loss_sum, correct, float(self.count)], dtype=torch.float64)


@dataclass(frozen=True)
class StepOutcome:
    """Whether any micro-batch's loss was NaN/inf (a device tensor: read it at a check)."""

    nonfinite: torch.Tensor


def accumulate_gradients(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    criterion: nn.Module,
    micro_batch: int | None,
    amp: torch.dtype | None,
    scale: Callable[[torch.Tensor], torch.Tensor] | None = None,
    sums: RunningSums | None = None,
) -> StepOutcome:
    """Forward and backward ``images`` in micro-batches of at most ``micro_batch`` images,
    adding to the parameters' ``.grad``: afterwards they hold the gradient of the whole batch's
    mean loss. ``scale`` is the AMP grad scaler's ``scale`` (fp16); ``sums`` gets each
    micro-batch's loss and accuracy."""
    size = images.shape[0]
    parts = list(
        zip(images.split(micro_batch or size), labels.split(micro_batch or size), strict=True)
    )
    no_sync = getattr(model, "no_sync", None)
    nonfinite = torch.zeros((), dtype=torch.bool, device=images.device)
    for i, (x, y) in enumerate(parts):
        last = i == len(parts) - 1
        sync: AbstractContextManager[None] = nullcontext() if last or no_sync is None else no_sync()
        with sync:
            with _autocast(x.device, amp):
                logits = model(x)
            loss = criterion(logits.float(), y)
            # Mean over the whole batch = sum of micro-means weighted by their share.
            weighted = loss if len(parts) == 1 else loss * (y.numel() / size)
            (scale(weighted) if scale is not None else weighted).backward()
        nonfinite |= ~torch.isfinite(loss.detach())
        if sums is not None:
            sums.add(loss, logits, y)
    return StepOutcome(nonfinite=nonfinite)


def _autocast(device: torch.device, amp: torch.dtype | None) -> AbstractContextManager[object]:
    """Mixed precision when ``amp`` is set; none otherwise (also on devices autocast does not
    know, such as the meta device the host-synchronisation test runs on)."""
    if amp is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=amp)
