"""Read a study for people: progress counts, the Pareto front so far, the compute estimate.

The front is computed with ``rs_search.selection.pareto`` over complete, feasible, trained trials
(``TrialRecord.usable``: a rejected candidate completes with top-1 0 and breaks a limit; it is
never on the front), which is what ``study.best_trials`` returns for a constrained study.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from rs_search.search import halving
from rs_search.selection.pareto import pareto_front
from rs_search.study.record import TrialRecord
from rs_search.study.settings import StudySettings


def front(records: Sequence[TrialRecord], settings: StudySettings) -> list[TrialRecord]:
    """The Pareto-optimal trained, feasible trials (``TrialRecord.usable``), most accurate
    first."""
    pool = [r for r in records if r.usable]
    if not pool:
        return []
    objectives = settings.objectives
    idx = pareto_front([r.point(objectives) for r in pool], settings.directions)
    chosen = [pool[i] for i in idx]
    return sorted(chosen, key=lambda r: -r.point(objectives)[0])


def front_rows(records: Sequence[TrialRecord], settings: StudySettings) -> list[list[str]]:
    rows = []
    for r in front(records, settings):
        values = [
            f"{v:.2f}" if name == "accuracy" else f"{v:.3f}"
            for name, v in zip(settings.objectives, r.point(settings.objectives), strict=True)
        ]
        rows.append(
            [
                str(r.number),
                r.label,
                *values,
                f"{r.measured.params_m or 0:.3f}",
                str(r.epochs_trained),
                r.seed_name or "",
            ]
        )
    return rows


def front_columns(settings: StudySettings) -> list[str]:
    names = {"accuracy": "top-1 %", "latency": "latency ms", "memory": "memory MB"}
    return [
        "trial",
        "architecture",
        *[names[o] for o in settings.objectives],
        "params M",
        "epochs",
        "seed",
    ]


@dataclass(frozen=True, kw_only=True)
class Progress:
    total: int | None
    complete: int
    pruned: int
    failed: int
    running: int
    waiting: int
    waiting_seeds: int  # of the waiting trials, seeds (halving never prunes them)
    rejected: int
    epochs: int  # epochs trained so far, all trials (retries count their own epochs once)

    def line(self) -> str:
        total = "" if self.total is None else f"/{self.total}"
        done = self.complete + self.pruned + self.failed
        return (
            f"{done}{total} done: {self.complete} complete ({self.rejected} rejected), "
            f"{self.pruned} pruned, {self.failed} failed; {self.running} running, "
            f"{self.waiting} waiting; {self.epochs} epochs trained"
        )


def progress(records: Sequence[TrialRecord], settings: StudySettings) -> Progress:
    by_state = {state: 0 for state in ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")}
    for r in records:
        by_state[r.state] = by_state.get(r.state, 0) + 1
    epochs: dict[int, int] = {}
    for r in records:  # a retry inherits its original's curve: count each origin once
        epochs[r.retry_origin] = max(epochs.get(r.retry_origin, 0), r.epochs_trained)
    return Progress(
        total=settings.n_trials,
        complete=by_state["COMPLETE"],
        pruned=by_state["PRUNED"],
        failed=sum(1 for r in records if r.state == "FAIL" and r.finished),
        running=by_state["RUNNING"],
        waiting=by_state["WAITING"],
        waiting_seeds=sum(1 for r in records if r.state == "WAITING" and r.seed_name is not None),
        rejected=sum(1 for r in records if r.state == "COMPLETE" and r.rejected is not None),
        epochs=sum(epochs.values()),
    )


@dataclass(frozen=True, kw_only=True)
class Estimate:
    trials: int
    budget: int
    full_epochs: int
    expected_epochs: float
    rungs: tuple[int, ...]
    eta: int | None
    train_images: int | None
    flops_range: tuple[int, int] | None  # forward FLOPs per image, smallest..largest architecture

    def lines(self) -> list[str]:
        out = [
            f"{self.trials} trials x {self.budget} epochs = {self.full_epochs} trial-epochs at most"
        ]
        if self.eta is not None and self.rungs:
            share = self.expected_epochs / max(1, self.full_epochs)
            out.append(
                f"successive halving (eta {self.eta}, rungs at epochs "
                f"{', '.join(map(str, self.rungs))}): about {self.expected_epochs:.0f} "
                f"trial-epochs ({share:.0%} of that)"
            )
        else:
            out.append("successive halving off: every trial trains the full budget")
        if self.train_images is not None:
            images = self.expected_epochs * self.train_images
            text = f"about {images / 1e6:.2f} M training images"
            if self.flops_range is not None:
                lo, hi = (3 * f * images for f in self.flops_range)  # forward + backward ~ 3x
                text += f", {_flop_text(lo)}..{_flop_text(hi)} of training compute"
            out.append(text + " (forward + backward = 3 x forward FLOPs)")
        return out


def _flop_text(flops: float) -> str:
    for unit, scale in (("EFLOP", 1e18), ("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9)):
        if flops >= scale:
            return f"{flops / scale:.3g} {unit}"
    return f"{flops:.3g} FLOP"


def estimate(
    settings: StudySettings,
    *,
    trials: int,
    train_images: int | None,
    flops_range: tuple[int, int] | None,
    seeds: int = 0,
) -> Estimate:
    """``seeds``: how many of ``trials`` are seeds, which halving never prunes."""
    rungs = settings.rungs
    seeds = min(seeds, trials) if settings.eta is not None else 0
    return Estimate(
        trials=trials,
        budget=settings.budget_epochs,
        full_epochs=trials * settings.budget_epochs,
        expected_epochs=seeds * settings.budget_epochs
        + halving.expected_epochs(trials - seeds, settings.budget_epochs, rungs, settings.eta),
        rungs=rungs,
        eta=settings.eta,
        train_images=train_images,
        flops_range=flops_range,
    )


# -- what the scaling rules proposed -------------------------------------------------------------

_CITATION = re.compile(r"\s*\[([^\[\]]*)\]")


@dataclass(frozen=True, kw_only=True)
class RuleOutcome:
    """One scaling-rule trial for people: what it proposed, why, and how it did against the
    trial it came from. Text from the study (the reason) is untrusted: print it without markup."""

    number: int
    origin: str  # rule:depth / rule:width
    source: int | None
    step: str  # "width 0.25→0.375"
    why: str  # the reason without its bracketed citations
    citations: tuple[str, ...]  # the bracketed paper / project-heuristic parts, in order
    result: str  # "top-1 97.50% (+1.39 vs trial 2's 96.11%), latency 3.1 ms (+0.52 ms)"
    on_front: bool


def rule_outcomes(records: Sequence[TrialRecord], settings: StudySettings) -> list[RuleOutcome]:
    """Every rule-proposal trial of the study, in trial order (see :class:`RuleOutcome`)."""
    by_number = {r.number: r for r in records}
    best = {r.number for r in front(records, settings)}
    out = []
    for r in records:
        if not r.is_rule_proposal:
            continue
        reason = r.reason or ""
        step, _, why = reason.partition(": ")
        source = by_number.get(r.source_trial) if r.source_trial is not None else None
        out.append(
            RuleOutcome(
                number=r.number,
                origin=r.origin,
                source=r.source_trial,
                step=step,
                why=_CITATION.sub("", why).strip(),
                citations=tuple(m.group(1) for m in _CITATION.finditer(why)),
                result=_result(r, source),
                on_front=r.number in best,
            )
        )
    return out


def _result(trial: TrialRecord, source: TrialRecord | None) -> str:
    """The trial's top-1 and latency against its source trial's, or its state."""
    retry = f" (retry of trial {trial.retry_of})" if trial.retry_of is not None else ""
    if trial.state == "FAIL" and not trial.finished:
        return f"stopped before its end: a retry takes it over{retry}"
    if trial.state != "COMPLETE" or trial.top1 is None:
        epochs = f" after {trial.epochs_trained} epochs" if trial.epochs_trained else ""
        return f"{trial.state.lower()}{epochs}{retry}"
    if trial.rejected is not None:
        return f"rejected before training ({trial.rejected})"
    parts = []
    base = source.top1 if source is not None else None
    against = f" vs trial {source.number}'s {base:.2f}%" if source and base is not None else ""
    delta = f"{trial.top1 - base:+.2f}" if base is not None else ""
    parts.append(f"top-1 {trial.top1:.2f}%" + (f" ({delta}{against})" if against else ""))
    latency, base_latency = trial.latency_ms, source.latency_ms if source else None
    if latency is not None:
        diff = f" ({latency - base_latency:+.3g} ms)" if base_latency is not None else ""
        parts.append(f"latency {latency:.3g} ms{diff}")
    return ", ".join(parts)
