"""Reading a stored study: its facts (``StudyInfo``), its settings, its trials as records.

A study made by ``rs-search start`` carries ``StudySettings`` in its user attributes; that is the
source. A plain Optuna study (or one an older version wrote) still reads: the few flat attributes
it may carry are read tolerantly, its values are taken in the study contract's order (accuracy,
latency[, memory]) unless it names them, and the rest stays unknown.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rs_search.errors import BudgetError
from rs_search.study import attrs
from rs_search.study.record import TrialRecord, directions_of, trial_record
from rs_search.study.settings import SettingsError, StudySettings

if TYPE_CHECKING:
    import optuna

#: Heartbeat timing when the study does not record one (the worker's production defaults).
DEFAULT_HEARTBEAT_S = 30
DEFAULT_GRACE_S = 120
#: The study contract's value order when a study does not name its objectives.
CONTRACT_ORDER = ("accuracy", "latency", "memory")
# Names a plain study may give its values (``rs-search start`` sets the first of each as Optuna
# metric names) -> our objective names.
_ALIASES = {
    "accuracy": "accuracy",
    "val_top1": "accuracy",
    "top1": "accuracy",
    "latency": "latency",
    "latency_ms": "latency",
    "memory": "memory",
    "memory_mb": "memory",
}


@dataclass(frozen=True, kw_only=True)
class StudyInfo:
    name: str
    target: str  # hardware profile the study's latency objective is measured on
    budget_epochs: int | None  # full training length of one trial
    trial_budget: int | None  # trials the search may run (None: open-ended)
    objectives: tuple[str, ...]  # accuracy, latency, memory: the names records key values by
    heartbeat_s: int = DEFAULT_HEARTBEAT_S
    grace_s: int = DEFAULT_GRACE_S
    from_settings: bool = False  # read through StudySettings (a study made by rs-search start)

    @property
    def directions(self) -> tuple[str, ...]:
        return directions_of(self.objectives)

    @property
    def epochs_budget(self) -> int | None:
        """Upper bound of the epochs the search may spend: trials x full budget (successive
        halving stops most trials early, so a search usually spends less)."""
        if self.budget_epochs is None or self.trial_budget is None:
            return None
        return self.budget_epochs * self.trial_budget


def settings_of(study: optuna.Study) -> StudySettings:
    """The settings ``rs-search start`` stored; ``SettingsError`` for any other study."""
    return StudySettings.from_study_attrs(study.user_attrs, study_name=study.study_name)


def settings_or_none(study: optuna.Study) -> StudySettings | None:
    try:
        return settings_of(study)
    except SettingsError:
        return None


def study_info(study: optuna.Study, settings: StudySettings | None = None) -> StudyInfo:
    settings = settings or settings_or_none(study)
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
    user = study.user_attrs
    return StudyInfo(
        name=study.study_name,
        target=_profile_name(user.get(attrs.TARGET)),
        budget_epochs=_epochs(_first(user, attrs.LEGACY_BUDGET_EPOCHS, attrs.BUDGET)),
        trial_budget=_int(_first(user, *attrs.LEGACY_TRIAL_BUDGET)),
        objectives=_plain_objectives(study),
    )


def _plain_objectives(study: optuna.Study) -> tuple[str, ...]:
    """Our names for a plain study's values: the names it gives them when we know each one,
    else the study contract's order."""
    count = len(study.directions)
    for names in (study.user_attrs.get(attrs.OBJECTIVES), study.metric_names):
        if isinstance(names, list) and len(names) == count:
            ours = [_ALIASES.get(str(n)) for n in names]
            if all(o is not None for o in ours) and len(set(ours)) == count:
                return tuple(o for o in ours if o is not None)
    return CONTRACT_ORDER[:count]


def study_records(
    study: optuna.Study, objectives: Sequence[str] | None = None
) -> list[TrialRecord]:
    """Every trial of ``study`` in trial-number order (``objectives``: the study's, read from it
    when not given)."""
    names = tuple(objectives) if objectives is not None else study_info(study).objectives
    return [trial_record(t, names) for t in study.get_trials(deepcopy=False)]


@dataclass(frozen=True, kw_only=True)
class StudySnapshot:
    """One reading of a study: what reports, export and the summary start from."""

    info: StudyInfo
    settings: StudySettings | None  # None: not made by rs-search start
    records: tuple[TrialRecord, ...]
    target: Mapping[str, Any] | None = None  # the target hardware profile's dict, when stored

    @property
    def name(self) -> str:
        return self.info.name


def read_study(study: optuna.Study) -> StudySnapshot:
    settings = settings_or_none(study)
    info = study_info(study, settings)
    return StudySnapshot(
        info=info,
        settings=settings,
        records=tuple(study_records(study, info.objectives)),
        target=target_of(study),
    )


def target_of(study: optuna.Study) -> Mapping[str, Any] | None:
    """The target hardware profile the study stores (``HardwareProfile.to_dict()``), if any:
    the latency worker's contract (issue 4)."""
    target = study.user_attrs.get(attrs.TARGET)
    return dict(target) if isinstance(target, Mapping) else None


def _first(values: Mapping[str, Any], *keys: str) -> Any:
    for key in keys:
        if values.get(key) is not None:
            return values[key]
    return None


def _profile_name(value: Any) -> str:
    if isinstance(value, Mapping):
        value = value.get("name")
    return str(value) if value else "target hardware"


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
