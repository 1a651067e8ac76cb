"""The scaling rules against a live study: read the front, cost proposals, put them in the queue.

``scaling.py`` is pure; this module is its adapter to an rs-search study (an Optuna study whose
settings ``rs-search start`` stored, see ``rs_search.search.settings``):

- :func:`study_views`: finished trials as ``TrialView``s, Pareto front first (ordered by
  hypervolume contribution, ``ties.py``), then the other complete trials;
- :class:`StudyCosts`: a proposal's latency and peak memory on the study's target profile from
  the latency cache, measured on a miss when asked, else predicted from its source trial's
  measured latency times the FLOPs ratio (a crude figure, labelled as such: FLOPs do not predict
  latency, Bello et al. 2021 Sec. 7.4); parameters are counted exactly;
- :func:`enqueue_proposals`: a proposal becomes a waiting trial whose fixed parameters are the
  ones the space's sampler would produce (``SearchSpace.seed_params``), tagged with user attrs
  ``origin`` (``rule:depth`` / ``rule:width``), ``reason``, ``source_trial`` and ``proposal``
  (the candidate). In a study with a trial budget it takes over the next empty budget slot (so
  it runs next and the budget stays N trials); without one it is appended;
- :func:`maybe_auto_scale` / :class:`AutoScale`: what ``rs-search worker --auto-scale`` runs after
  each trial: when a sampler trial (not a rule trial) finished and no rule trial is waiting,
  propose one and enqueue it, so the search alternates between the sampler and the rules.

A proposal outside the study's space (a deeper layout than the space lists) cannot be expressed
as the sampler's parameters; it is queued whole instead, under the user attr
``rs_search.search.attrs.FIXED_CANDIDATE``, with no parameters, and the worker trains that
candidate as given.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from rs_search.search import attrs as _search_attrs
from rs_search.selection.pareto import selection_order
from rs_search.selection.scaling import (
    Cost,
    Limits,
    Proposal,
    ProposalSet,
    RuleSettings,
    TrialView,
    propose,
)
from rs_search.selection.ties import front_order

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

    from rs_search.search.settings import StudySettings

_log = logging.getLogger("rs_search.selection")

# user attr: "rule:depth" / "rule:width" (absent for sampler and seed trials); the worker reads it
ORIGIN = _search_attrs.ORIGIN
REASON = "reason"
SOURCE_TRIAL = "source_trial"
PROPOSAL = "proposal"  # the proposed Candidate.to_dict()
RULE_PREFIX = "rule:"


def is_rule_trial(trial: FrozenTrial) -> bool:
    return str(trial.user_attrs.get(ORIGIN, "")).startswith(RULE_PREFIX)


def _complete(trial: FrozenTrial) -> bool:
    from optuna.trial import TrialState

    return (
        trial.state == TrialState.COMPLETE
        and trial.values is not None
        and "rejected" not in trial.user_attrs
        and all(float(c) <= 0 for c in trial.constraints.values())
    )  # feasible


def study_views(study: optuna.Study, settings: StudySettings) -> list[TrialView]:
    """Complete, trained trials as views: the Pareto front first (largest hypervolume
    contribution first), then the rest in NSGA-II order."""
    trials = [t for t in study.get_trials(deepcopy=False) if _complete(t)]
    views: list[TrialView] = []
    points: list[tuple[float, ...]] = []
    for t in trials:
        v = TrialView.from_trial(t, budget=settings.budget_epochs)
        if v is not None and v.values is not None:
            views.append(v)
            points.append(v.values)
    if not views:
        return []
    arr = np.asarray(points, dtype=float)
    directions = list(settings.directions)
    front = front_order(arr, directions)
    rest = [int(i) for i in selection_order(arr, directions) if int(i) not in set(front)]
    return [views[i] for i in front + rest]


def existing_keys(study: optuna.Study) -> dict[str, int]:
    """Candidate key -> trial number, for every trial that ran or waits with a known candidate."""
    from rs_search.errors import SpecError
    from rs_search.specs import Candidate

    out: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        for name in ("candidate", PROPOSAL):
            raw = t.user_attrs.get(name)
            if isinstance(raw, dict):
                try:
                    out.setdefault(Candidate.from_dict(raw).key(), t.number)
                except SpecError:
                    continue
    return out


# -- costs ---------------------------------------------------------------------------------------


@dataclass
class StudyCosts:
    """Cost of a proposal on the study's target profile (see the module docstring)."""

    storage: Any  # a URL or an SQLAlchemy engine holding the latency cache; None: no cache
    target: dict[str, Any]
    views: dict[int, TrialView]
    source_latency: dict[int, float] = field(default_factory=dict)
    measure: bool = False
    _cache: Any = field(default=None, init=False, repr=False)
    _profile: Any = field(default=None, init=False, repr=False)

    @classmethod
    def for_study(
        cls,
        study: optuna.Study,
        settings: StudySettings,
        views: Sequence[TrialView],
        *,
        storage: Any = None,
        measure: bool = False,
    ) -> StudyCosts:
        """``storage``: the latency cache's database (URL or engine); None: the study's own
        engine (one connection pool per process, DESIGN.md section 5)."""
        latency: dict[int, float] = {}
        objectives = list(settings.objectives)
        index = objectives.index("latency") if "latency" in objectives else None
        for v in views:
            if index is not None and v.values is not None:
                latency[v.number] = v.values[index]
        return cls(
            storage=storage if storage is not None else study_engine(study),
            target=dict(settings.target),
            views={v.number: v for v in views},
            source_latency=latency,
            measure=measure,
        )

    def _open(self) -> None:
        if self._profile is not None or not self.target:
            return
        from rs_search.latency.profiles import HardwareProfile

        self._profile = HardwareProfile.from_dict(dict(self.target))
        if self.storage is not None:
            from rs_search.latency.cache import LatencyCache

            self._cache = LatencyCache(self.storage)

    def close(self) -> None:
        if self._cache is not None:
            self._cache.close()
            self._cache = None

    def __call__(self, proposal: Proposal) -> Cost:
        from rs_search.models.complexity import count_flops, count_params

        arch = proposal.candidate.arch
        params_m = count_params(arch) / 1e6
        self._open()
        if self._cache is not None and self._profile is not None:
            # A figure from the target's named hardware (else any device of this profile: an
            # estimate) counts: a latency worker on the deployment hardware may have filled the
            # table for a study training elsewhere.
            result = (
                self._cache.get_or_measure(arch, self._profile, device=self._profile.device)
                if self.measure
                else self._cache.find(arch, self._profile, device_name=self._profile.device_name)
            )
            if result is not None and getattr(result, "status", "ok") == "ok":
                how = "measured" if self.measure else "latency cache"
                return Cost(
                    latency_ms=float(result.median_ms),
                    memory_mb=_float_or_none(getattr(result, "peak_memory_mb", None)),
                    params_m=params_m,
                    source=f"{how}, {self._profile.name}",
                )
            if result is not None and getattr(result, "status", "") == "oom":
                return Cost(
                    latency_ms=float("inf"),
                    memory_mb=float("inf"),
                    params_m=params_m,
                    source=f"does not fit on {self._profile.name}",
                )
        source = self.views.get(proposal.source_trial)
        base = self.source_latency.get(proposal.source_trial)
        if source is None or base is None:
            return Cost(params_m=params_m, source="parameters counted; latency unknown")
        ratio = count_flops(arch) / max(1, count_flops(source.candidate.arch))
        return Cost(
            latency_ms=base * ratio,
            params_m=params_m,
            source=f"predicted: trial {source.number}'s {base:.3g} ms x FLOPs ratio {ratio:.2f}",
        )


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


def study_engine(study: optuna.Study) -> Any:
    """The SQLAlchemy engine of the study's RDBStorage (behind Optuna's cache wrapper), or None
    for a storage without one (in-memory studies: no latency cache)."""
    storage = getattr(study._storage, "_backend", study._storage)
    return getattr(storage, "engine", None)


# -- proposing and enqueuing ---------------------------------------------------------------------


def propose_for_study(
    study: optuna.Study,
    settings: StudySettings,
    *,
    n: int = 1,
    storage: Any = None,
    measure: bool = False,
    rules: RuleSettings | None = None,
) -> ProposalSet:
    """Proposals for ``study`` from its front, costed on its target profile and checked against
    its limits. Every one can run: one outside the space is queued whole (module docstring)."""
    space = settings.search_space()
    rules = rules or RuleSettings(space=space)
    views = study_views(study, settings)
    costs = StudyCosts.for_study(study, settings, views, storage=storage, measure=measure)
    try:
        return propose(
            views,
            n=n,
            settings=rules,
            limits=Limits.from_mapping(settings.constraints),
            cost_fn=costs,
            existing=existing_keys(study),
        )
    finally:
        costs.close()


@dataclass(frozen=True, kw_only=True)
class Enqueued:
    proposal: Proposal
    trial_number: int | None  # None: not enqueued
    how: str  # "slot" (took over an empty budget slot), "appended", or why it was not enqueued


def _user_attrs(proposal: Proposal) -> dict[str, Any]:
    return {
        ORIGIN: proposal.origin,
        REASON: proposal.reason,
        SOURCE_TRIAL: proposal.source_trial,
        PROPOSAL: proposal.candidate.to_dict(),
    }


def _empty_slots(study: optuna.Study) -> list[FrozenTrial]:
    from optuna.trial import TrialState

    from rs_search.search import attrs

    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    return [
        t
        for t in waiting
        if attrs.SLOT in t.user_attrs
        and ORIGIN not in t.user_attrs
        and not t.system_attrs.get("fixed_params")
    ]


def _take_slot(
    study: optuna.Study, slot: FrozenTrial, params: dict[str, Any], user_attrs: dict[str, Any]
) -> bool:
    """Turn an empty waiting budget slot into this proposal.

    The slot is claimed the way Optuna claims a waiting trial (WAITING -> RUNNING, which only one
    process wins), given its fixed parameters and attributes, and put back to WAITING; no worker
    can start it half-written. Returns False when another process claimed it first.
    """
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    storage = study._storage
    try:
        if not storage.set_trial_state_values(slot._trial_id, state=TrialState.RUNNING):
            return False
    except UpdateFinishedTrialError:
        return False
    try:
        storage.set_trial_system_attr(slot._trial_id, "fixed_params", params)
        for key, value in user_attrs.items():
            storage.set_trial_user_attr(slot._trial_id, key, value)
    finally:
        storage.set_trial_state_values(slot._trial_id, state=TrialState.WAITING)
    return True


def enqueue_proposals(
    study: optuna.Study, settings: StudySettings, proposals: Sequence[Proposal]
) -> list[Enqueued]:
    """Put ``proposals`` in the study's queue (see the module docstring)."""
    from optuna.trial import TrialState

    from rs_search.errors import SpaceError

    space = settings.search_space()
    out: list[Enqueued] = []
    for proposal in proposals:
        user_attrs = _user_attrs(proposal)
        try:
            params = space.seed_params(proposal.candidate)
        except SpaceError:
            params = {}
            user_attrs[_search_attrs.FIXED_CANDIDATE] = proposal.candidate.to_dict()
        taken = None
        if settings.n_trials is not None:
            for slot in _empty_slots(study):
                if _take_slot(study, slot, params, user_attrs):
                    taken = slot.number
                    break
        if taken is not None:
            out.append(Enqueued(proposal=proposal, trial_number=taken, how="slot"))
            continue
        before = {t.number for t in study.get_trials(deepcopy=False)}
        study.enqueue_trial(params, user_attrs=user_attrs, skip_if_exists=True)
        new = [
            t
            for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
            if t.number not in before
        ]
        how = (
            "appended"
            if settings.n_trials is None
            else (
                "appended beyond the trial budget (no empty slot left; raise it with "
                "`rs-search start --trials`)"
            )
        )
        out.append(
            Enqueued(
                proposal=proposal,
                trial_number=new[0].number if new else None,
                how=how if new else "not enqueued: the same parameters are queued",
            )
        )
    return out


# -- the worker's hook ---------------------------------------------------------------------------


def maybe_auto_scale(
    study: optuna.Study,
    trial: FrozenTrial,
    *,
    settings: StudySettings | None = None,
    storage: Any = None,
    every: int = 1,
    measure: bool = False,
    echo: Callable[[str], None] | None = None,
) -> list[Enqueued]:
    """After ``trial`` finished: when it came from the sampler (or a seed), every ``every``-th
    such trial, with no rule trial already waiting and an empty slot in a budgeted study,
    propose one candidate by the rules and enqueue it. Returns what was enqueued."""
    from optuna.trial import TrialState

    if every < 1:
        raise ValueError(f"every {every}: at least 1")
    if is_rule_trial(trial) or trial.state not in (TrialState.COMPLETE, TrialState.PRUNED):
        return []
    if settings is None:
        from rs_search.search.settings import StudySettings

        settings = StudySettings.from_study_attrs(study.user_attrs, study_name=study.study_name)
    trials = study.get_trials(deepcopy=False)
    if any(t.state == TrialState.WAITING and is_rule_trial(t) for t in trials):
        return []
    sampler_done = sum(
        1
        for t in trials
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED) and not is_rule_trial(t)
    )
    if sampler_done % every:
        return []
    if settings.n_trials is not None and not _empty_slots(study):
        return []
    result = propose_for_study(study, settings, n=1, storage=storage, measure=measure)
    done = enqueue_proposals(study, settings, result.proposals)
    if echo is not None:
        for e in done:
            where = f"trial {e.trial_number}" if e.trial_number is not None else "nothing"
            echo(
                f"auto-scale after trial {trial.number}: {e.proposal.origin} -> {where} "
                f"({e.how}): {e.proposal.reason}"
            )
        for d in result.dropped:
            echo(
                f"auto-scale: dropped {d.proposal.reason.split(':')[0]} from trial "
                f"{d.proposal.source_trial}: {d.reason}"
            )
        if not result.proposals:
            why = "; ".join(result.skipped[:3]) or "no finished trial on the front"
            echo(f"auto-scale after trial {trial.number}: no proposal ({why})")
    return done


@dataclass
class AutoScale:
    """An Optuna callback (``study.optimize(callbacks=[AutoScale(...)])``) running
    :func:`maybe_auto_scale` after every trial. A failure here is logged, never fatal: the
    search goes on without the proposal."""

    settings: StudySettings | None = None
    storage: Any = None
    every: int = 1
    measure: bool = False
    echo: Callable[[str], None] | None = None

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        try:
            maybe_auto_scale(
                study,
                trial,
                settings=self.settings,
                storage=self.storage,
                every=self.every,
                measure=self.measure,
                echo=self.echo,
            )
        except Exception as exc:  # noqa: BLE001 - a proposal must never stop a worker
            _log.warning(
                "auto-scale after trial %d failed: %s: %s", trial.number, type(exc).__name__, exc
            )
            if self.echo is not None:
                self.echo(
                    f"auto-scale after trial {trial.number} failed: {type(exc).__name__}: {exc}"
                )
