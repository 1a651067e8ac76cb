"""Study settings: everything a worker needs, stored with the study (DESIGN.md section 3).

``rs-search start`` writes one ``StudySettings`` into the study's user attributes, so a worker on
another machine needs only the study name and the storage URL. The whole record sits under
``rs_search``; the parts other tools read are also stored flat, in plain JSON, so that
optuna-dashboard shows them and a latency worker finds the hardware it must measure:

- ``target``: the target hardware profile dict (the latency worker's contract, issue 4);
- ``space_fingerprint``, ``budget``, ``data``, ``objectives``, ``constraints``.

Heartbeat timing lives here too (production defaults: a 30 s heartbeat and a 120 s grace period;
Optuna's heartbeat is fragile under ~10 s). ``RS_SEARCH_HEARTBEAT="INTERVAL,GRACE"`` overrides both
for a worker process, which is how tests use 1 s / 3 s without changing a study.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from rs_search.errors import RsSearchError
from rs_search.search import halving
from rs_search.specs import RecipeSpec

if TYPE_CHECKING:
    from rs_search.space import SearchSpace

SETTINGS_ATTR = "rs_search"
TARGET_ATTR = "target"
ENV_HEARTBEAT = "RS_SEARCH_HEARTBEAT"
SAMPLERS = ("tpe", "nsga2", "gp", "random")
SCHEMA = 1

# Optuna objective name -> (our metric name, direction). Order is the study's value order.
OBJECTIVE_UNITS = {"accuracy": "top-1 %", "latency": "ms", "memory": "MB"}


class SettingsError(RsSearchError):
    """A study's stored settings are missing or unreadable (not created by ``rs-search start``)."""


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
        return halving.rung_epochs(self.budget_epochs, eta=self.eta, min_rung=self.min_rung)

    def search_space(self) -> SearchSpace:
        from rs_search.space import SearchSpace

        return SearchSpace.from_dict(dict(self.space), source="study settings")

    def heartbeat(self) -> tuple[int, int]:
        """(interval, grace) in seconds, ``$RS_SEARCH_HEARTBEAT`` taking precedence."""
        raw = os.environ.get(ENV_HEARTBEAT)
        if not raw:
            return self.heartbeat_interval, self.grace_period
        try:
            interval, grace = (int(p) for p in raw.split(","))
        except ValueError:
            raise RsSearchError(
                f"{ENV_HEARTBEAT}={raw!r}: expected INTERVAL,GRACE in whole seconds, e.g. 30,120"
            ) from None
        if interval < 1 or grace <= interval:
            raise RsSearchError(f"{ENV_HEARTBEAT}={raw!r}: need 1 <= INTERVAL < GRACE")
        return interval, grace

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
            SETTINGS_ATTR: self.to_dict(),
            TARGET_ATTR: dict(self.target),
            "space_fingerprint": self.space_fingerprint,
            "budget": f"{self.budget_epochs}epochs",
            "data": self.data,
            "objectives": list(self.objectives),
            "constraints": dict(self.constraints),
        }

    @classmethod
    def from_study_attrs(cls, attrs: Mapping[str, Any], *, study_name: str) -> StudySettings:
        raw = attrs.get(SETTINGS_ATTR)
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


def _max_warmup(space: SearchSpace) -> float:
    """The longest LR warm-up the space can sample (RecipeSpec's default when it names none)."""
    try:
        domain = space.param("recipe.warmup_epochs").domain
    except KeyError:
        return float(RecipeSpec().warmup_epochs)
    values = domain.values()
    if values:
        return float(max(values))
    return float(getattr(domain, "high", 0.0))


def settings_from_space(
    space: SearchSpace,
    *,
    budget_epochs: int,
    data: str,
    eta: int | None,
    min_rung: int | None,
    n_trials: int | None,
    sampler: str,
    seed: int | None,
    heartbeat_interval: int,
    grace_period: int,
    artifacts: str,
) -> StudySettings:
    """Settings for a new study over ``space``; ``min_rung=None`` picks halving's default."""
    if eta is not None and min_rung is None:
        min_rung = halving.default_min_rung(
            budget_epochs, eta=eta, warmup_epochs=_max_warmup(space)
        )
    return StudySettings(
        space=space.to_dict(),
        space_fingerprint=space.fingerprint(),
        budget_epochs=budget_epochs,
        data=data,
        objectives=tuple(o.name for o in space.objectives),
        directions=tuple(o.direction for o in space.objectives),
        constraints=space.constraints.to_dict(),
        target=space.target.to_dict(),
        eta=eta,
        min_rung=min_rung or 1,
        n_trials=n_trials,
        sampler=sampler,
        seed=seed,
        heartbeat_interval=heartbeat_interval,
        grace_period=grace_period,
        artifacts=artifacts,
    )
