"""Read a study for people: progress counts, the Pareto front so far, the compute estimate.

The front is computed with ``rs_search.selection.pareto`` over complete, feasible, trained trials
(a rejected candidate completes with top-1 0 and breaks a limit; it is never on the front), which
is what ``study.best_trials`` returns for a constrained study.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from rs_search.search import attrs, halving
from rs_search.search.settings import StudySettings
from rs_search.selection.pareto import pareto_front


def trained_trials(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """Complete trials that were trained and meet every hard limit."""
    return [
        t
        for t in trials
        if t.state == TrialState.COMPLETE
        and t.values is not None
        and attrs.REJECTED not in t.user_attrs
        and all(v <= 0 for v in t.constraints.values())
    ]


def front(trials: Sequence[FrozenTrial], settings: StudySettings) -> list[FrozenTrial]:
    """The Pareto-optimal trained trials, most accurate first."""
    pool = trained_trials(trials)
    if not pool:
        return []
    idx = pareto_front([t.values for t in pool], settings.directions)
    chosen = [pool[i] for i in idx]
    return sorted(chosen, key=lambda t: -float(t.values[0]))


def describe(trial: FrozenTrial) -> str:
    """``1-1-1-1 w0.25 r32``: the architecture in a few characters."""
    arch = trial.user_attrs.get(attrs.ARCH) or {}
    layout = "-".join(str(b) for b in arch.get("layout", []))
    return f"{layout} w{arch.get('width', '?')} r{arch.get('resolution', '?')}"


def front_rows(trials: Sequence[FrozenTrial], settings: StudySettings) -> list[list[str]]:
    rows = []
    for t in front(trials, settings):
        values = [
            f"{v:.2f}" if name == "accuracy" else f"{v:.3f}"
            for name, v in zip(settings.objectives, t.values, strict=True)
        ]
        epochs = len(attrs.curve(t))
        params = f"{t.user_attrs.get(attrs.PARAMS_M, 0):.3f}"
        rows.append(
            [
                str(t.number),
                describe(t),
                *values,
                params,
                str(epochs),
                t.user_attrs.get(attrs.SEED_NAME, ""),
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


def progress(study: optuna.Study, settings: StudySettings) -> Progress:
    trials = study.get_trials(deepcopy=False)
    by_state = {s: 0 for s in TrialState}
    for t in trials:
        by_state[t.state] += 1
    epochs: dict[int, int] = {}
    for t in trials:
        o = attrs.origin(t)
        epochs[o] = max(epochs.get(o, 0), len(attrs.curve(t)))
    return Progress(
        total=settings.n_trials,
        complete=by_state[TrialState.COMPLETE],
        pruned=by_state[TrialState.PRUNED],
        failed=sum(1 for t in trials if t.state == TrialState.FAIL and attrs.is_finished(t)),
        running=by_state[TrialState.RUNNING],
        waiting=by_state[TrialState.WAITING],
        waiting_seeds=sum(
            1 for t in trials if t.state == TrialState.WAITING and attrs.SEED_NAME in t.user_attrs
        ),
        rejected=sum(
            1 for t in trials if t.state == TrialState.COMPLETE and attrs.REJECTED in t.user_attrs
        ),
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


def as_json(study: optuna.Study, settings: StudySettings) -> dict[str, Any]:
    """A machine-readable summary (``start --json``, benchmarks)."""
    trials = study.get_trials(deepcopy=False)
    p = progress(study, settings)
    return {
        "study": study.study_name,
        "progress": p.__dict__,
        "front": [
            {
                "number": t.number,
                "values": list(t.values),
                "arch": t.user_attrs.get(attrs.ARCH),
                "epochs": len(attrs.curve(t)),
            }
            for t in front(trials, settings)
        ],
    }
