"""The scaling rules against a live study: read it, cost proposals, put them in the queue.

``rs_search.selection`` is pure (records in, proposals out); this module is its adapter to an
rs-search study:

- :class:`StudyCosts`: a proposal's latency and peak memory on the study's target profile from
  the latency cache, measured on a miss when asked, else predicted from its source trial's
  measured latency times the FLOPs ratio (a crude figure, labelled as such: FLOPs do not predict
  latency, Bello et al. 2021 Sec. 7.4); parameters are counted exactly;
- :func:`propose_for_study`: proposals from the study's front, costed and checked against its
  limits;
- :func:`enqueue_proposals`: a proposal becomes a waiting trial whose fixed parameters are the
  ones the space's sampler would produce (``SearchSpace.seed_params``), tagged with user attrs
  ``origin`` (``rule:depth`` / ``rule:width``), ``reason``, ``source_trial`` and ``proposal``
  (the candidate). In a study with a trial budget it takes over the next empty budget slot (so
  it runs next and the budget stays N trials); without one it is appended. A proposal outside
  the study's space (a deeper layout than the space lists) cannot be expressed as the sampler's
  parameters; it is queued whole instead (``fixed_candidate``, no parameters), and the worker
  trains that candidate as given;
- :func:`maybe_auto_scale` / :class:`AutoScale`: what ``rs-search worker --auto-scale`` runs
  after each trial (``selection.autoscale.wants_proposal`` decides when).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rs_search.selection.autoscale import existing_keys, views_for, wants_proposal
from rs_search.selection.scaling import (
    Cost,
    Proposal,
    ProposalSet,
    RuleSettings,
    TrialView,
    propose,
)
from rs_search.space import Constraints
from rs_search.study import attrs
from rs_search.study.queue import enqueue_candidate
from rs_search.study.read import settings_of, study_records
from rs_search.study.record import TrialRecord
from rs_search.study.settings import StudySettings
from rs_search.study.storage import engine_of

if TYPE_CHECKING:
    import optuna

_log = logging.getLogger("rs_search.search.proposals")


def limits_of(settings: StudySettings) -> Constraints:
    """The study's hard limits as the space states them."""
    return Constraints(**{k: float(v) for k, v in settings.constraints.items()})


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
        records: Sequence[TrialRecord],
        views: Sequence[TrialView],
        *,
        storage: Any = None,
        measure: bool = False,
    ) -> StudyCosts:
        """``storage``: the latency cache's database (URL or engine); None: the study's own
        engine (one connection pool per process, DESIGN.md section 5). A view's latency is its
        trial's latency objective (none when the study has no latency objective)."""
        latency = {
            r.number: r.values["latency"]
            for r in records
            if r.values is not None and "latency" in r.values
        }
        return cls(
            storage=storage if storage is not None else engine_of(study),
            target=dict(settings.target),
            views={v.number: v for v in views},
            source_latency={v.number: latency[v.number] for v in views if v.number in latency},
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


# -- proposing and enqueuing ---------------------------------------------------------------------


def train_images_of(settings: StudySettings) -> int | None:
    """The study's training-set size (the regime the rules read), opened as ``start`` checks it
    and remembered per process; None when the data cannot be opened here (a worker without the
    data folder still proposes, and the reason says the size is unknown)."""
    from rs_search.search.launch import check_data

    key = (settings.data, settings.space_fingerprint)
    if key not in _TRAIN_IMAGES:
        try:
            _TRAIN_IMAGES[key] = check_data(settings.data, settings.search_space())
        except Exception:  # noqa: BLE001 - a size for the reasons, never a reason to fail
            _TRAIN_IMAGES[key] = None
    return _TRAIN_IMAGES[key]


_TRAIN_IMAGES: dict[tuple[str, str], int | None] = {}


def propose_for_study(
    study: optuna.Study,
    settings: StudySettings,
    *,
    n: int = 1,
    storage: Any = None,
    measure: bool = False,
    rules: RuleSettings | None = None,
    records: Sequence[TrialRecord] | None = None,
) -> ProposalSet:
    """Proposals for ``study`` from its front, costed on its target profile and checked against
    its limits. Every one can run: one outside the space is queued whole (module docstring)."""
    space = settings.search_space()
    rules = rules or RuleSettings(space=space)
    if records is None:
        records = study_records(study, settings.objectives)
    views = views_for(
        records,
        budget=settings.budget_epochs,
        objectives=settings.objectives,
        train_images=train_images_of(settings),
    )
    costs = StudyCosts.for_study(study, settings, records, views, storage=storage, measure=measure)
    try:
        return propose(
            views,
            n=n,
            settings=rules,
            limits=limits_of(settings),
            cost_fn=costs,
            existing=existing_keys(records),
        )
    finally:
        costs.close()


@dataclass(frozen=True, kw_only=True)
class Enqueued:
    proposal: Proposal
    trial_number: int | None  # None: not enqueued
    how: str  # "slot" (took over an empty budget slot), "appended", or why it was not enqueued


def proposal_attrs(proposal: Proposal) -> dict[str, Any]:
    """The user attributes a queued proposal carries (``rs_search.study.attrs``)."""
    return {
        attrs.ORIGIN: proposal.origin,
        attrs.REASON: proposal.reason,
        attrs.SOURCE_TRIAL: proposal.source_trial,
        attrs.PROPOSAL: proposal.candidate.to_dict(),
    }


def enqueue_proposals(
    study: optuna.Study, settings: StudySettings, proposals: Sequence[Proposal]
) -> list[Enqueued]:
    """Put ``proposals`` in the study's queue (see the module docstring)."""
    from rs_search.errors import SpaceError

    space = settings.search_space()
    budgeted = settings.n_trials is not None
    out: list[Enqueued] = []
    for proposal in proposals:
        user_attrs: dict[str, Any] = proposal_attrs(proposal)
        params: Mapping[str, Any]
        try:
            params = space.seed_params(proposal.candidate)
        except SpaceError:
            params = {}
            user_attrs[attrs.FIXED_CANDIDATE] = proposal.candidate.to_dict()
        queued = enqueue_candidate(
            study,
            params=params,
            user_attrs=user_attrs,
            use_slot=budgeted,
            objectives=settings.objectives,
        )
        out.append(
            Enqueued(proposal=proposal, trial_number=queued.number, how=_how(queued.how, budgeted))
        )
    return out


def _how(queued: str, budgeted: bool) -> str:
    if queued == "duplicate":
        return "not enqueued: the same parameters are queued"
    if queued == "appended" and budgeted:
        return (
            "appended beyond the trial budget (no empty slot left; raise it with "
            "`rs-search start --trials`)"
        )
    return queued


# -- the worker's hook ---------------------------------------------------------------------------


def maybe_auto_scale(
    study: optuna.Study,
    trial: TrialRecord,
    *,
    settings: StudySettings | None = None,
    storage: Any = None,
    every: int = 1,
    measure: bool = False,
    echo: Callable[[str], None] | None = None,
) -> list[Enqueued]:
    """After ``trial`` finished: when ``selection.autoscale.wants_proposal`` says so, propose one
    candidate by the rules and enqueue it. Returns what was enqueued."""
    if settings is None:
        settings = settings_of(study)
    records = study_records(study, settings.objectives)
    if not wants_proposal(trial, records, every=every, budgeted=settings.n_trials is not None):
        return []
    result = propose_for_study(
        study, settings, n=1, storage=storage, measure=measure, records=records
    )
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
    """The worker's hook after every trial (``study.queue.after_each_trial`` turns it into an
    ``optimize`` callback): :func:`maybe_auto_scale`. A failure here is logged, never fatal: the
    search goes on without the proposal."""

    settings: StudySettings | None = None
    storage: Any = None
    every: int = 1
    measure: bool = False
    echo: Callable[[str], None] | None = None

    def __call__(self, study: optuna.Study, trial: TrialRecord) -> None:
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
