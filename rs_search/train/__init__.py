"""Training engine: data sources, augmentation, the ResNet-RS recipe, checkpoints, DDP.

``rs_search.train.engine.train`` trains one candidate (DESIGN.md sections 1 and 3); the search
calls it per trial, ``rs-search train`` and ``torchrun -m rs_search.train`` from the command
line. Submodules import torch; this package file does not, so that ``rs-search --help`` stays
fast.
"""

from __future__ import annotations

from typing import Any

__all__ = ["EpochMetrics", "RunOptions", "TrainResult", "train"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from rs_search.train import engine

        return getattr(engine, name)
    raise AttributeError(f"module 'rs_search.train' has no attribute {name!r}")
