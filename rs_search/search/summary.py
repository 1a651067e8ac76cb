"""Read a study for people: progress counts, the Pareto front so far, the compute estimate.

The front is computed with ``rs_search.selection.pareto`` over complete, feasible, trained trials
(``TrialRecord.usable``: a rejected candidate completes with top-1 0 and breaks a limit; it is
never on the front), which is what ``study.best_trials`` returns for a constrained study.
"""

from __future__ import annotations

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
