"""A real overfitting run, for the scaling rules' overfitting test (issue 12, item 2).

A ResNet-RS net far too large for its data ([1, 1, 1, 1] at width 0.5, 16 px) trained long
(40 epochs) with every regularizer off (no label smoothing, weight decay, dropout, RandAugment
or EMA) on 10 digits per class (100 training images), judged on 360 held-out digits. It fits its
training images and stops generalizing: the textbook overfitting curve, real, not drawn.

``record(path)`` trains it and writes the curve (``EpochMetrics`` rows, as a trial stores them)
to ``path`` as JSON; ``tests/selection/data/overfit-curve.json`` was written by::

    OMP_NUM_THREADS=1 PYTHONPATH=. python -m tests.selection.overfit_run \
        tests/selection/data/overfit-curve.json

Every choice here (sizes, epochs, LR) is a project choice made to overfit quickly on a CPU.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from rs_search.specs import ArchSpec, Candidate, RecipeSpec

PER_CLASS_TRAIN = 10
PER_CLASS_VAL = 36
EPOCHS = 40

CANDIDATE = Candidate(
    arch=ArchSpec(layout=(1, 1, 1, 1), width=0.5, resolution=16, num_classes=10, in_channels=1),
    recipe=RecipeSpec(
        epochs=EPOCHS,
        batch_size=20,
        lr_per_256=0.64,  # peak LR 0.05 at batch 20
        weight_decay=0.0,
        label_smoothing=0.0,
        ema_decay=0.0,
        dropout=0.0,
        stochastic_depth=0.0,
        randaug_layers=0,
        warmup_epochs=1,
        precision="fp32",
    ),
)


def tiny_digits(root: Path) -> Path:
    """``root/train/<digit>/*.png`` (5 a class) and ``root/val/<digit>/*.png`` (36 a class)
    from scikit-learn's digits, in a fixed order."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = (torch.from_numpy(bunch.images) * (255.0 / 16.0)).round().to(torch.uint8)
    seen = dict.fromkeys(range(10), 0)
    for image, label in zip(images, bunch.target.tolist(), strict=True):
        n = seen[label]
        if n >= PER_CLASS_TRAIN + PER_CLASS_VAL:
            continue
        split = "train" if n < PER_CLASS_TRAIN else "val"
        folder = root / split / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image.numpy(), mode="L").save(folder / f"{n}.png")
        seen[label] = n + 1
    return root


def run(folder: Path) -> list[dict[str, Any]]:
    from rs_search.train.engine import RunOptions, train

    options = RunOptions(
        data=f"imagefolder:{tiny_digits(folder)}", device="cpu", progress=False, num_workers=0
    )
    return [row.to_dict() for row in train(CANDIDATE, options).curve]


def record(path: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        curve = run(Path(tmp))
    payload = {"candidate": CANDIDATE.to_dict(), "made_by": __doc__.split("\n")[0], "curve": curve}
    path.write_text(json.dumps(payload, indent=1) + "\n")


if __name__ == "__main__":
    record(Path(sys.argv[1]))
