"""What one timed pass is: an inference forward pass, or a training step (a profile's ``mode``).

- ``inference_pass``: the network in eval mode, cast to the profile's dtype and memory format,
  on one batch of random images, under ``torch.inference_mode``.
- ``train_step``: the paper's latency (tensorflow/tpu models/official/resnet/resnet_rs/README.md,
  "Benchmarking details": "measured with an initial training batch size of 128 images, which is
  divided by 2 until it fits onto the accelerator"): forward, loss, backward and an SGD step with
  momentum 0.9 (the recipe's optimizer, DESIGN.md section 1) in train mode, fp32 weights with
  autocast in the profile's dtype when it is not fp32 (as the engine trains; no loss scaler, whose
  cost is a few element-wise ops). ``fit_batch`` does the halving.

Latency does not depend on the weights, so both use random weights and random data.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import TypeVar

import torch
from torch import nn

from rs_search.errors import is_out_of_memory
from rs_search.latency.backends import compile_fresh, free
from rs_search.latency.memory import resident_bytes
from rs_search.latency.profiles import HardwareProfile
from rs_search.models import build_model
from rs_search.specs import ArchSpec

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# Project heuristic: a learning rate small enough that thousands of timed steps on random data
# keep the weights finite (NaN or denormal arithmetic runs at another speed on CPUs); the time
# of an SGD step does not depend on it.
_TIMING_LR = 1e-4

T = TypeVar("T")


@dataclass(frozen=True)
class Pass:
    """One timed unit of work and what it keeps resident."""

    run: Callable[[], object]  # one pass; the caller synchronises the device around it
    batch: int  # images per pass
    resident: int  # bytes held between passes: weights, buffers, optimizer state, inputs
    grad: bool  # a training step (autograd on); else run under torch.inference_mode

    def context(self) -> AbstractContextManager[object]:
        return nullcontext() if self.grad else torch.inference_mode()


def build(arch: ArchSpec, profile: HardwareProfile, device: torch.device, batch: int) -> Pass:
    """The pass ``profile.mode`` names, at ``batch`` images."""
    if profile.mode == "train_step":
        return train_step(arch, profile, device, batch)
    return inference_pass(arch, profile, device, batch)


def inference_pass(
    arch: ArchSpec, profile: HardwareProfile, device: torch.device, batch: int
) -> Pass:
    dtype = DTYPES[profile.dtype]
    fmt = _memory_format(profile)
    model: nn.Module = build_model(arch).eval()
    model = model.to(device=device, dtype=dtype).to(memory_format=fmt)
    images = torch.randn(
        batch, arch.in_channels, arch.resolution, arch.resolution, device=device, dtype=dtype
    ).contiguous(memory_format=fmt)
    resident = resident_bytes([*model.parameters(), *model.buffers(), images])
    run = compile_fresh(model) if profile.compile else model
    return Pass(run=lambda: run(images), batch=batch, resident=resident, grad=False)


def train_step(arch: ArchSpec, profile: HardwareProfile, device: torch.device, batch: int) -> Pass:
    """A training step at ``batch`` images, run once here: the first step allocates the momentum
    buffers, and a batch that does not fit raises now (``fit_batch`` halves it)."""
    fmt = _memory_format(profile)
    model = build_model(arch).train().to(device=device).to(memory_format=fmt)
    optimizer = torch.optim.SGD(model.parameters(), lr=_TIMING_LR, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
    images = torch.randn(
        batch, arch.in_channels, arch.resolution, arch.resolution, device=device
    ).contiguous(memory_format=fmt)
    labels = torch.randint(0, arch.num_classes, (batch,), device=device)
    forward = compile_fresh(model) if profile.compile else model
    amp = profile.dtype != "fp32"
    dtype = DTYPES[profile.dtype]

    def step() -> None:
        # Gradients are allocated by the backward and freed after the update, as in a training
        # loop with ``zero_grad(set_to_none=True)``: they count in the step's peak memory, not
        # in what stays resident between steps.
        with torch.autocast(device.type, dtype=dtype, enabled=amp):
            loss = loss_fn(forward(images), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()
    state = [t for s in optimizer.state.values() for t in s.values() if isinstance(t, torch.Tensor)]
    resident = resident_bytes([*model.parameters(), *model.buffers(), *state, images, labels])
    return Pass(run=step, batch=batch, resident=resident, grad=True)


def halvings(start: int) -> list[int]:
    """``start``, ``start // 2``, ... down to 1: the batches a training step is tried at."""
    out = [start]
    while out[-1] > 1:
        out.append(out[-1] // 2)
    return out


def fit_batch(
    start: int,
    attempt: Callable[[int], T],
    *,
    device: torch.device,
    on_halve: Callable[[int, int], None] | None = None,
) -> T:
    """``attempt(batch)`` at ``start``, halved after each out-of-memory until one fits (the
    paper's protocol). Raises the last out-of-memory when not even one image fits, and any other
    failure at once. ``on_halve(batch, next_batch)`` hears of each halving."""
    batches = halvings(start)
    for i, batch in enumerate(batches):
        try:
            return attempt(batch)
        except Exception as exc:
            if not is_out_of_memory(exc) or i == len(batches) - 1:
                raise
        free(device)  # outside the except block: its traceback no longer holds the tensors
        if on_halve is not None:
            on_halve(batch, batches[i + 1])
    raise AssertionError("unreachable: the last batch returns or raises")


def _memory_format(profile: HardwareProfile) -> torch.memory_format:
    return torch.channels_last if profile.channels_last else torch.contiguous_format
