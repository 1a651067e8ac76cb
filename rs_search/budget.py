"""``--budget 350epochs``: the full training length of one trial (DESIGN.md section 3, "Budget").

The paper compares models at 10, 100 and 350 epochs (Bello et al. 2021, Sec. 7), so a budget is
a number of epochs; multi-fidelity rungs are fractions of it. The unit is always written out: a
bare ``350`` could mean epochs, steps or minutes, so it is an error that says which units exist.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rs_search.errors import BudgetError
from rs_search.specs import MAX_EPOCHS

# unit spelling -> canonical unit; one canonical unit today, the table leaves room for "steps".
UNITS: dict[str, str] = {"epochs": "epochs", "epoch": "epochs", "ep": "epochs"}

_BUDGET = re.compile(r"^\s*(?P<number>[+-]?\d+(?:\.\d*)?|[+-]?\.\d+)\s*(?P<unit>[A-Za-z]*)\s*$")


@dataclass(frozen=True, kw_only=True)
class Budget:
    """Training length of one full-fidelity trial."""

    epochs: int

    def __post_init__(self) -> None:
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 1:
            raise BudgetError(f"budget: {self.epochs!r} epochs; allowed: a whole number >= 1")

    def __str__(self) -> str:
        return f"{self.epochs}epochs"


def _units_help() -> str:
    return ", ".join(UNITS) + " (for example 350epochs or 12ep)"


def parse_budget(text: str) -> Budget:
    """``"350epochs"`` -> ``Budget(epochs=350)``; units: ``epochs``, ``epoch``, ``ep``."""
    if not isinstance(text, str):
        raise BudgetError(f"budget {text!r}: expected text such as 350epochs")
    match = _BUDGET.match(text)
    if match is None:
        raise BudgetError(
            f"budget {text!r}: expected a whole number and a unit; units: {_units_help()}"
        )
    number, unit = match["number"], match["unit"].lower()
    if not unit:
        raise BudgetError(f"budget {text!r}: the unit is missing; units: {_units_help()}")
    if unit not in UNITS:
        raise BudgetError(f"budget {text!r}: unknown unit {unit!r}; units: {_units_help()}")
    if not re.fullmatch(r"[+-]?\d+", number):
        raise BudgetError(
            f"budget {text!r}: {number} is not a whole number of {UNITS[unit]}; "
            f"units: {_units_help()}"
        )
    digits = number.lstrip("+-").lstrip("0")
    if number.startswith("-") or not digits:
        raise BudgetError(
            f"budget {text!r}: must be at least 1 {UNITS[unit].rstrip('s')}; units: {_units_help()}"
        )
    # Compared as text first: int() refuses more than 4300 digits with a ValueError.
    if len(digits) > len(str(MAX_EPOCHS)) or int(digits) > MAX_EPOCHS:
        raise BudgetError(
            f"budget {text!r}: at most {MAX_EPOCHS} epochs (project heuristic; the paper's longest "
            "schedule is 350)"
        )
    value = int(digits)
    return Budget(epochs=value)
