"""``--budget`` parsing: explicit units, whole positive epochs, errors that list the units."""

from __future__ import annotations

import pytest

from rs_search.budget import UNITS, Budget, parse_budget
from rs_search.errors import BudgetError


@pytest.mark.parametrize(
    ("text", "epochs"),
    [
        ("350epochs", 350),
        ("1epoch", 1),
        ("12ep", 12),
        (" 100 epochs ", 100),
        ("10EPOCHS", 10),
        ("+7ep", 7),
    ],
)
def test_good_budgets(text: str, epochs: int) -> None:
    assert parse_budget(text) == Budget(epochs=epochs)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("350", "unit is missing"),
        ("abc", "expected a whole number and a unit"),
        ("", "expected a whole number and a unit"),
        ("0epochs", "at least 1"),
        ("-3epochs", "at least 1"),
        ("3.5epochs", "not a whole number"),
        ("350steps", "unknown unit 'steps'"),
        ("350 minutes", "unknown unit 'minutes'"),
        ("epochs", "expected a whole number and a unit"),
        ("1e3epochs", "expected a whole number and a unit"),
    ],
)
def test_bad_budgets_name_the_units(text: str, why: str) -> None:
    with pytest.raises(BudgetError) as info:
        parse_budget(text)
    message = str(info.value)
    assert why in message
    assert f"units: {', '.join(UNITS)}" in message, message


def test_budget_is_an_rs_search_error_with_exit_status_2() -> None:
    with pytest.raises(BudgetError) as info:
        parse_budget("350")
    assert info.value.exit_code == 2


def test_budget_dataclass_rejects_non_positive() -> None:
    with pytest.raises(BudgetError):
        Budget(epochs=0)
    assert str(Budget(epochs=5)) == "5epochs"
