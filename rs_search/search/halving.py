"""Pareto-aware successive halving for multi-objective studies (DESIGN.md section 3).

Optuna prunes only single-objective studies (``trial.should_prune`` raises otherwise), so
rs-search decides itself, following asynchronous successive halving (Li et al. 2020, "A System
for Massively Parallel Hyperparameter Tuning", ASHA) with the ranking replaced by NSGA-II's:

- rungs sit at ``budget / eta^k`` epochs (k = 1, 2, ...), down to ``min_rung``;
- when a trial reaches a rung it records its validation top-1 there (``rung_<epoch>``);
- it continues only if, among all trials that reached that rung (retries counted once, by their
  original), its position in the crowded-comparison order (non-dominated rank on
  (top-1 at the rung, latency[, memory]), then crowding distance) is within the first
  ``max(1, n // eta)`` — Optuna's ``SuccessiveHalvingPruner`` promotion rule, so the first trial
  at a rung always continues and later ones must beat the rung's field.

Latency and memory are known before training (they are measured on the target hardware), so a
fast but less accurate candidate can survive a rung: halving keeps the front's breadth instead of
only its most accurate end (both ends of a rung's front have infinite crowding distance, so once
``n // eta >= 2`` both continue). Early on, with one place, the ends compete and the earlier trial
wins the tie. Always promoting the ends as well (per-objective records) was tried and measured: it
roughly doubled the epochs of small studies (a noisy latency figure makes many early trials
"fastest so far") and added nothing once ``n >= eta^2``; see benchmarks/RESULTS.md, "Search".
Seeds (the space's listed configurations) and the scaling rules' proposals are never pruned
(:func:`exemption`).

**The regime** (issue 12 item 3). Bello et al. (2021, Sec. 7) show that the best net after a
few epochs is not the best after many: deeper and wider nets learn slower early and win at long
budgets. A rung ranks by top-1 mid-schedule, so plain halving prunes exactly those. Here a rung
prunes only where the study's own evidence says its ranking holds (:func:`regime_exemption`),
measured, never assumed (DESIGN.md section 3):

- the evidence at a rung is every trial that trained to the full budget and recorded a value at
  the rung (seeds and rule proposals always do, so every study has some): Kendall's tau-b of top-1
  at the rung against top-1 at the end (``rs_search.fidelity``, the statistic the report's
  fidelity panel shows);
- with fewer than ``fidelity.MIN_TRIALS`` such trials, or a tau below ``fidelity.MIN_TRUSTED_TAU``
  (both project heuristics, shared with the report's warning), the rung promotes everyone;
- a candidate with more than ``SIMILAR_SIZE`` times the parameters of the largest of them is
  promoted as well: a tau measured on smaller nets says nothing about the slow starters
  (project heuristic);

and the decision records the tau, the number of trials behind it and, when it promoted a trial
its place would have pruned, why. The cost is that the first trials of a study train to the end
until the rung is measured (seeds count); on a short schedule where ranks hold (tau 0.83 at the
CI table's rung) pruning starts after them. A rung does not decide on stale batch-norm statistics
either: the engine recomputes them before every evaluation (``rs_search.train.batchnorm``).
Measured before/after on recorded curves: benchmarks/RESULTS.md, "Halving that respects the
regime".
Everything here is pure: it reads trial records (``rs_search.study.record``). Where the rungs
sit is part of a study's settings (``rs_search.study.settings.rung_epochs``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from rs_search.fidelity import MIN_TRIALS, MIN_TRUSTED_TAU, RankAgreement, agreement_at
from rs_search.selection.pareto import non_dominated_rank, selection_order
from rs_search.study.record import Measurements, TrialRecord


def default_min_rung(budget: int, *, eta: int, warmup_epochs: float = 0.0) -> int:
    """At most three rungs below the full budget: ``budget / eta^3`` (at least one epoch), and
    past the LR warm-up: a rung inside it judges trials on near-chance accuracy (measured on the
    quickstart: 10-11 of 16 trials at chance at epoch 1 of a 1-epoch warm-up)."""
    return max(1, round(budget / eta**3), math.floor(warmup_epochs) + 1)


def expected_epochs(n_trials: int, budget: int, rungs: Sequence[int], eta: int | None) -> float:
    """Training epochs the search is expected to spend: a fraction ``1/eta^k`` of the trials
    trains past the k-th rung. Without halving it is ``n_trials * budget``."""
    if eta is None or not rungs:
        return float(n_trials * budget)
    total = 0.0
    previous = 0
    for k, epoch in enumerate([*rungs, budget]):
        total += n_trials / eta**k * (epoch - previous)
        previous = epoch
    return total


@dataclass(frozen=True, kw_only=True)
class Decision:
    """The outcome at one rung, stored in the trial's ``halving`` user attribute."""

    epoch: int
    keep: bool
    position: int  # 0-based place in the crowded-comparison order
    kept: int  # how many of the field continue (max(1, n // eta))
    field_size: int
    rank: int  # non-dominated rank at the rung, 0-based (0: on the rung's Pareto front)
    exempt: str | None = None  # why it continues whatever its place (``exemption``)
    # the study's evidence at the rung (``rung_evidence``): Kendall tau of top-1 at the rung
    # with the full budget (None: undefined) over ``evidence`` full-budget trials
    tau: float | None = None
    evidence: int = 0

    def reason(self) -> str:
        verdict = "continues" if self.keep else "pruned"
        if self.exempt:
            verdict += f" ({self.exempt})"
        measured = ""
        if self.evidence:
            tau = "undefined" if self.tau is None else f"{self.tau:.2f}"
            measured = f", rung tau {tau} over {self.evidence} full-budget trials"
        return (
            f"epoch {self.epoch}: place {self.position + 1} of {self.field_size} "
            f"({_front_words(self.rank)}), top {self.kept} continue{measured}: {verdict}"
        )

    def to_dict(self) -> dict[str, int | bool | str | float]:
        out: dict[str, int | bool | str | float] = {
            "epoch": self.epoch,
            "keep": self.keep,
            "position": self.position,
            "kept": self.kept,
            "field_size": self.field_size,
            "rank": self.rank,
        }
        if self.exempt:
            out["exempt"] = self.exempt
        if self.evidence:
            out["evidence"] = self.evidence
            if self.tau is not None:
                out["tau"] = round(self.tau, 4)
        return out


def _front_words(rank: int) -> str:
    return "on the rung's front" if rank == 0 else f"front {rank + 1}"


# Trials halving never prunes. Both still record their rung value, so they stay in the field
# other trials are judged against.
# - A seed: a configuration the user listed (a published ResNet-RS); its final figures are what
#   the user asked for, and they anchor the front.
# - A scaling rule's proposal (``rs-search propose --enqueue`` / ``--auto-scale``): the rules
#   mostly propose bigger nets, which learn slower early, so an early rung pruned every one of
#   them in a quickstart run (5 of 5) and the rule was never tested.
SEED_EXEMPT = "a seed trains to the full budget"
RULE_EXEMPT = "a scaling rule's proposal trains to the full budget"


def exemption(trial: TrialRecord) -> str | None:
    """Why ``trial`` is never pruned (None: it may be)."""
    if trial.seed_name is not None:
        return SEED_EXEMPT
    if trial.is_rule_proposal:
        return RULE_EXEMPT
    return None


def exempt(decision: Decision, why: str) -> Decision:
    """``decision`` turned into "continues" for the reason ``why`` (see ``exemption``)."""
    return decision if decision.keep else replace(decision, keep=True, exempt=why)


# -- the regime: a rung prunes only where the study's own evidence says its ranking holds ----------

#: Project heuristic (the paper gives no number): a candidate with more than this many times the
#: parameters of the largest full-budget trial that reached the rung lies outside the study's
#: evidence about that rung, whatever its tau: the paper's slow starters are the bigger nets
#: (Bello et al. 2021, Sec. 7), and a tau measured on smaller ones says nothing of them. 2 is
#: about one step of the published ResNet-RS depths (50 -> 101: 1.8x the parameters) or of a
#: width multiplier by sqrt(2).
SIMILAR_SIZE = 2.0
#: Before enough full-budget trials measure a rung (fewer than ``MIN_TRIALS``), does it prune as
#: plain successive halving does (True) or promote everyone (False)? Both were replayed on the
#: benchmark tables (benchmarks/RESULTS.md, "Halving that respects the regime"): pruning before
#: the rung is measured kept most of the front loss, so an unmeasured rung promotes.
PRUNE_UNMEASURED = False


@dataclass(frozen=True, kw_only=True)
class Evidence:
    """What the study's full-budget trials say about the rung at ``agreement.epoch``: the rank
    agreement (``rs_search.fidelity``) of their top-1 at the rung with their top-1 at the full
    budget, and the size of the largest of them."""

    agreement: RankAgreement
    largest_params_m: float | None


def full_budget_top1(trial: TrialRecord) -> float | None:
    """A trial's top-1 at the full budget: None unless it completed training (not a repeat, not
    rejected by a hard limit)."""
    if trial.state != "COMPLETE" or trial.repeat_of is not None or trial.rejected is not None:
        return None
    value = trial.values.get("accuracy") if trial.values is not None else None
    if value is None and trial.curve:
        value = trial.curve[-1].get("val_top1")
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def rung_evidence(trials: Sequence[TrialRecord], epoch: int) -> Evidence:
    """The evidence at the rung ``epoch`` from every full-budget trial that recorded a value
    there (seeds, rule proposals and promoted trials all do; a retry counts once)."""
    pairs: dict[int, tuple[float, float, float | None]] = {}
    for trial in trials:
        rung, final = trial.rungs.get(epoch), full_budget_top1(trial)
        if rung is None or final is None or not math.isfinite(rung):
            continue
        pairs.setdefault(trial.retry_origin, (rung, final, trial.measured.params_m))
    rows = list(pairs.values())
    sizes = [p for _, _, p in rows if p is not None]
    return Evidence(
        agreement=agreement_at(epoch, [r for r, _, _ in rows], [f for _, f, _ in rows]),
        largest_params_m=max(sizes) if sizes else None,
    )


def regime_exemption(evidence: Evidence, params_m: float | None) -> str | None:
    """Why a candidate of ``params_m`` million parameters continues past the rung whatever its
    place there, because the study has not shown that the rung ranks as the full budget does
    (None: the rung's ranking stands; see the module docstring)."""
    a = evidence.agreement
    if a.n < MIN_TRIALS and not PRUNE_UNMEASURED:
        return (
            f"rung not yet measured: {a.n} full-budget trials reached it, fewer than "
            f"{MIN_TRIALS} (project heuristic)"
        )
    if a.n >= MIN_TRIALS and not a.defined:
        return (
            f"rung rank agreement undefined over {a.n} full-budget trials (all equal): not "
            "measured, so it promotes (project heuristic)"
        )
    if a.n >= MIN_TRIALS and a.tau < MIN_TRUSTED_TAU:
        return (
            f"rung ranks unlike the full budget: Kendall tau {a.tau:.2f} over {a.n} full-budget "
            f"trials, below {MIN_TRUSTED_TAU:g} (project heuristic)"
        )
    largest = evidence.largest_params_m
    if params_m is not None and largest is not None and params_m > SIMILAR_SIZE * largest:
        return (
            f"{params_m / largest:.1f}x the parameters of the largest full-budget trial, more "
            f"than {SIMILAR_SIZE:g}x (project heuristic): the rung's tau does not cover it"
        )
    return None


def with_evidence(decision: Decision, evidence: Evidence) -> Decision:
    """``decision`` carrying the evidence's tau and count (recorded with the trial)."""
    a = evidence.agreement
    return replace(decision, tau=a.tau if a.defined else None, evidence=a.n)


def decide(
    points: Sequence[Sequence[float]],
    me: int,
    *,
    directions: Sequence[str],
    eta: int,
    epoch: int,
) -> Decision:
    """Should ``points[me]`` continue past the rung at ``epoch``? ``points`` are every trial that
    reached the rung (itself included), in the objectives' order and directions."""
    assert 0 <= me < len(points)
    order = selection_order(points, directions).tolist()
    ranks = non_dominated_rank(points, directions)
    kept = max(1, len(points) // eta)
    position = order.index(me)
    return Decision(
        epoch=epoch,
        keep=position < kept,
        position=position,
        kept=kept,
        field_size=len(points),
        rank=int(ranks[me]),
    )


def objective_point(
    top1: float, measured: Measurements, objectives: Sequence[str]
) -> list[float] | None:
    """(top-1, latency[, memory]) in the study's objective order, or None if a figure is missing."""
    figures = {"accuracy": top1, "latency": measured.latency_ms, "memory": measured.memory_mb}
    out: list[float] = []
    for name in objectives:
        value = figures[name]
        if value is None or math.isnan(value):
            return None
        out.append(float(value))
    return out


def rung_points(
    trials: Sequence[TrialRecord], epoch: int, objectives: Sequence[str]
) -> dict[int, list[float]]:
    """Origin trial number -> point at the rung, for every trial (any state) that reached it.

    A retry and its original share one origin and the same inherited rung value; one entry each.
    """
    out: dict[int, list[float]] = {}
    for trial in trials:
        value = trial.rungs.get(epoch)
        if value is None:
            continue
        point = objective_point(value, trial.measured, objectives)
        if point is not None:
            out.setdefault(trial.retry_origin, point)
    return out
