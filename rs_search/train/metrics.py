"""What a run reports: one :class:`EpochMetrics` row per epoch, the :class:`TrainResult`, the
``metrics.json`` payload and the one-line epoch summary."""

from __future__ import annotations

import json
import resource
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from rs_search.specs import Candidate
from rs_search.train.checkpoint import write_atomic

__all__ = [
    "METRICS_FILE",
    "EpochMetrics",
    "TrainResult",
    "epoch_line",
    "peak_memory_mb",
    "write_metrics",
]

METRICS_FILE = "metrics.json"


@dataclass(frozen=True, kw_only=True)
class EpochMetrics:
    """One row of the training curve. Top-1 values are percentages (0-100).

    ``val_*`` are the EMA weights' results when the recipe has an EMA (what the paper reports),
    else the raw weights'; ``val_*_raw`` are always the raw weights'. Both are measured after
    the epoch in eval mode with batch-norm statistics recomputed for those weights
    (:mod:`rs_search.train.batchnorm`).

    ``train_loss`` and ``train_top1`` are running averages over the epoch's batches as trained:
    augmented, with dropout and stochastic depth on, the weights changing from batch to batch;
    they sit below validation for most of a regularised run and are no measure of overfitting.
    ``train_eval_*`` (and ``train_eval_*_raw``) measure train accuracy like validation: the same
    weights as ``val_*`` (and ``val_*_raw``), eval mode, no augmentation, on a fixed subset of
    the training split (:func:`rs_search.train.loader.train_eval_indices`: as many images as
    the val split, at most ``TRAIN_EVAL_MAX_IMAGES``; the same images every epoch, after a resume
    and for every candidate), so ``train_eval_top1 - val_top1`` is the train/val gap the paper's
    depth rule reads. They are None in rows written before they existed.

    ``images_per_s`` counts training images of all ranks per second of the training phase;
    ``epoch_seconds`` includes evaluation.
    ``peak_memory_mb``: peak CUDA memory allocated by this process in the epoch, or on CPU the
    process's peak resident set size so far. ``lr``: the LR after the epoch's last step, where
    the next epoch starts (the peak after the warm-up, 0 after the last epoch).
    """

    epoch: int
    train_loss: float
    train_top1: float
    val_loss: float
    val_top1: float
    val_loss_raw: float
    val_top1_raw: float
    images_per_s: float
    epoch_seconds: float
    peak_memory_mb: float
    lr: float
    train_eval_loss: float | None = None
    train_eval_top1: float | None = None
    train_eval_loss_raw: float | None = None
    train_eval_top1_raw: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EpochMetrics:
        return cls(**data)


@dataclass(frozen=True, kw_only=True)
class TrainResult:
    """What a run produced: the curve up to ``epochs_done``; ``stopped_early`` when ``on_epoch``
    asked to stop (reaching ``stop_at_epoch`` is not early)."""

    candidate: Candidate
    curve: list[EpochMetrics]
    epochs_done: int
    stopped_early: bool
    out_dir: Path | None

    @property
    def final(self) -> EpochMetrics | None:
        return self.curve[-1] if self.curve else None


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def epoch_line(m: EpochMetrics, epochs: int, *, has_ema: bool) -> str:
    raw = f" (raw {m.val_top1_raw:.2f}%)" if has_ema else ""
    measured = f" (eval mode {m.train_eval_top1:.2f}%)" if m.train_eval_top1 is not None else ""
    return (
        f"epoch {m.epoch}/{epochs}  train loss {m.train_loss:.4f} top-1 {m.train_top1:.2f}%"
        f"{measured}  val loss {m.val_loss:.4f} top-1 {m.val_top1:.2f}%{raw}  "
        f"{m.images_per_s:.1f} img/s  {m.epoch_seconds:.1f} s  lr {m.lr:.4g}"
    )


def write_metrics(out_dir: Path, payload: dict[str, Any]) -> None:
    """``metrics.json`` in ``out_dir``, replaced atomically."""
    text = json.dumps(payload, indent=2) + "\n"
    write_atomic(out_dir / METRICS_FILE, lambda fh: fh.write(text.encode()))
