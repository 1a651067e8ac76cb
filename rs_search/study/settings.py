"""Study settings: everything a worker needs, stored with the study (DESIGN.md section 3).

``rs-search start`` writes one ``StudySettings`` into the study's user attributes, so a worker on
another machine needs only the study name and the storage URL. The whole record sits under
``rs_search``; the parts other tools read are also stored flat, in plain JSON, so that
optuna-dashboard shows them and a latency worker finds the hardware it must measure:

- ``target``: the target hardware profile dict (the latency worker's contract, issue 4);
- ``space_fingerprint``, ``budget``, ``data``, ``objectives``, ``constraints``.

Heartbeat timing lives here too (production defaults: a 30 s heartbeat and a 120 s grace period;
Optuna's heartbeat is fragile under ~10 s). A worker may override both for its own process
(``RS_SEARCH_HEARTBEAT``, read once at its entry point), which is how tests use 1 s / 3 s without
changing a study.

The rung schedule (:func:`rung_epochs`) is part of what the settings mean: rungs sit at
``budget / eta^k`` epochs. Who continues at a rung is the halving rule's business
(``rs_search.search.halving``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from rs_search.errors import RsSearchError
from rs_search.study import attrs

if TYPE_CHECKING:
    from rs_search.space import SearchSpace

SETTINGS_ATTR = attrs.SETTINGS
TARGET_ATTR = attrs.TARGET
SAMPLERS = ("tpe", "nsga2", "gp", "random")
SCHEMA = 1


class SettingsError(RsSearchError):
    """A study's stored settings are missing or unreadable (not created by ``rs-search start``)."""


def rung_epochs(budget: int, *, eta: int, min_rung: int = 1) -> tuple[int, ...]:
    """Ascending rung epochs ``round(budget / eta^k)`` >= ``min_rung``, the budget excluded.

    >>> rung_epochs(12, eta=3)
    (1, 4)
    >>> rung_epochs(350, eta=3, min_rung=13)
    (13, 39, 117)
    """
    if eta < 2:
        raise ValueError(f"eta must be >= 2, got {eta}")
    rungs: set[int] = set()
    k = 1
    while True:
        epoch = round(budget / eta**k)
        if epoch < max(1, min_rung):
            break
        if epoch < budget:
            rungs.add(epoch)
        k += 1
    return tuple(sorted(rungs))


@dataclass(frozen=True, kw_only=True)
class StudySettings:
    """What a study searches and how; immutable once the study exists (except ``n_trials``,
    which ``start --trials`` may raise when it resumes a study)."""

    space: Mapping[str, Any]  # SearchSpace.to_dict()
    space_fingerprint: str
    budget_epochs: int
    data: str = "digits"
    objectives: tuple[str, ...] = ("accuracy", "latency")
    directions: tuple[str, ...] = ("maximize", "minimize")
    constraints: Mapping[str, float] = field(default_factory=dict)
    target: Mapping[str, Any] = field(default_factory=dict)
    eta: int | None = 3  # None: no successive halving, every trial trains the full budget
    min_rung: int = 1
    n_trials: int | None = None  # None: run until stopped or timed out
    sampler: str = "tpe"
    seed: int | None = None
    heartbeat_interval: int = 30
    grace_period: int = 120
    max_retry: int = 3
    artifacts: str = "rs-search-artifacts"
    schema: int = SCHEMA

    def __post_init__(self) -> None:
        if self.budget_epochs < 1:
            raise ValueError(f"budget_epochs must be >= 1, got {self.budget_epochs}")
        if self.eta is not None and self.eta < 2:
            raise ValueError(f"eta must be >= 2 (or None to turn halving off), got {self.eta}")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler {self.sampler!r}; allowed: {', '.join(SAMPLERS)}")
        if self.heartbeat_interval < 1 or self.grace_period <= self.heartbeat_interval:
            raise ValueError("need heartbeat_interval >= 1 and grace_period > heartbeat_interval")

    # -- derived ---------------------------------------------------------------------------------

    @property
    def rungs(self) -> tuple[int, ...]:
        """Epochs at which successive halving decides (empty when halving is off)."""
        if self.eta is None:
            return ()
        return rung_epochs(self.budget_epochs, eta=self.eta, min_rung=self.min_rung)

    def search_space(self) -> SearchSpace:
        from rs_search.space import SearchSpace

        return SearchSpace.from_dict(dict(self.space), source="study settings")

    def heartbeat(self, override: tuple[int, int] | None = None) -> tuple[int, int]:
        """(interval, grace) in seconds: the process's ``override`` (``Environment.heartbeat``)
        when given, else the study's."""
        if override is not None:
            return override
        return self.heartbeat_interval, self.grace_period

    # -- storage round trip ----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["space"] = dict(self.space)
        out["objectives"] = list(self.objectives)
        out["directions"] = list(self.directions)
        out["constraints"] = dict(self.constraints)
        out["target"] = dict(self.target)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StudySettings:
        values = dict(data)
        values["objectives"] = tuple(values.get("objectives", ()))
        values["directions"] = tuple(values.get("directions", ()))
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in values.items() if k in known})

    def user_attrs(self) -> dict[str, Any]:
        """The study user attributes that carry these settings."""
        return {
            attrs.SETTINGS: self.to_dict(),
            attrs.TARGET: dict(self.target),
            attrs.SPACE_FINGERPRINT: self.space_fingerprint,
            attrs.BUDGET: f"{self.budget_epochs}epochs",
            attrs.DATA: self.data,
            attrs.OBJECTIVES: list(self.objectives),
            attrs.CONSTRAINTS: dict(self.constraints),
        }

    @classmethod
    def from_study_attrs(cls, study_attrs: Mapping[str, Any], *, study_name: str) -> StudySettings:
        raw = study_attrs.get(SETTINGS_ATTR)
        if not isinstance(raw, Mapping):
            raise SettingsError(
                f"study {study_name!r} has no rs-search settings; create it with "
                "`rs-search start` (a plain Optuna study cannot be joined)"
            )
        try:
            return cls.from_dict(raw)
        except (TypeError, ValueError) as exc:
            raise SettingsError(
                f"study {study_name!r}: unreadable rs-search settings ({exc})"
            ) from None
