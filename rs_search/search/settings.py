"""Settings for a new study: what ``rs-search start`` stores (``rs_search.study.settings``),
derived from the space and the command line."""

from __future__ import annotations

from rs_search.search import halving
from rs_search.space import SearchSpace
from rs_search.specs import RecipeSpec
from rs_search.study.settings import StudySettings


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
