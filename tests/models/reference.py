"""The reference figures the model tests check against (tests/data/reference_figures.yaml)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

REFERENCE_FILE = Path(__file__).resolve().parents[1] / "data" / "reference_figures.yaml"


def load_reference() -> dict[str, Any]:
    with REFERENCE_FILE.open() as fh:
        data: dict[str, Any] = yaml.safe_load(fh)
    return data


REFERENCE = load_reference()
MODELS: dict[str, dict[str, Any]] = REFERENCE["models"]
VARIANTS: list[tuple[str, dict[str, Any]]] = [
    (name, variant) for name, model in MODELS.items() for variant in model["variants"]
]
