"""Study-level facts that reports and ``rs-search status`` print: target, budgets, heartbeat.

A study made by ``rs-search start`` carries ``StudySettings`` (``rs_search.search.settings``) in
its user attributes; that loader is the source. A plain Optuna study (or one written by an older
version) still gets a report: the few flat attributes it may carry are read tolerantly and the
rest stays unknown.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rs_search.errors import BudgetError

if TYPE_CHECKING:
    import optuna

#: Heartbeat timing when the study does not record one (the worker's production defaults).
DEFAULT_HEARTBEAT_S = 30
DEFAULT_GRACE_S = 120


@dataclass(frozen=True, kw_only=True)
class StudyInfo:
    name: str
    target: str  # hardware profile the study's latency objective is measured on
    budget_epochs: int | None  # full training length of one trial
    trial_budget: int | None  # trials the search may run (None: open-ended)
    objectives: tuple[str, ...]
    heartbeat_s: int = DEFAULT_HEARTBEAT_S
    grace_s: int = DEFAULT_GRACE_S
    from_settings: bool = False  # read through StudySettings (a study made by rs-search start)

    @property
    def epochs_budget(self) -> int | None:
        """Upper bound of the epochs the search may spend: trials x full budget (successive
        halving stops most trials early, so a search usually spends less)."""
        if self.budget_epochs is None or self.trial_budget is None:
            return None
        return self.budget_epochs * self.trial_budget


def study_info(study: optuna.Study) -> StudyInfo:
    from rs_search.search.settings import SettingsError, StudySettings

    attrs = study.user_attrs
    try:
        settings = StudySettings.from_study_attrs(attrs, study_name=study.study_name)
    except SettingsError:
        settings = None
    if settings is not None:
        return StudyInfo(
            name=study.study_name,
            target=_profile_name(settings.target),
            budget_epochs=settings.budget_epochs,
            trial_budget=settings.n_trials,
            objectives=tuple(settings.objectives),
            heartbeat_s=settings.heartbeat_interval,
            grace_s=settings.grace_period,
            from_settings=True,
        )
    names = study.metric_names or _objective_names(attrs.get("objectives"))
    return StudyInfo(
        name=study.study_name,
        target=_profile_name(attrs.get("target")),
        budget_epochs=_epochs(_first(attrs, "budget_epochs", "budget")),
        trial_budget=_int(_first(attrs, "trial_budget", "n_trials")),
        objectives=tuple(names or ("accuracy", "latency", "memory")[: len(study.directions)]),
    )


def _first(values: Mapping[str, Any], *keys: str) -> Any:
    for key in keys:
        if values.get(key) is not None:
            return values[key]
    return None


def _profile_name(value: Any) -> str:
    if isinstance(value, Mapping):
        value = value.get("name")
    return str(value) if value else "target hardware"


def _objective_names(value: Any) -> list[str]:
    if isinstance(value, list):
        return [str(v) for v in value]
    return []


def _int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if value > 0 else None


def _epochs(value: Any) -> int | None:
    if isinstance(value, str):
        from rs_search.budget import parse_budget

        try:
            return parse_budget(value).epochs
        except BudgetError:
            return None
    return _int(value)
