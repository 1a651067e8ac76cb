"""Data step of the fidelity check in a real study: does each rung rank like the full budget?

At every rung epoch the study's halving decided on (the ``rungs`` its trials recorded), the rank
agreement (Kendall's tau-b, ``rs_search.fidelity``) between top-1 at the rung and the final top-1,
over the trials that trained past the rung to the full budget: seeds and rule proposals always
do (halving exempts them), sampled trials when they won their rungs. A tau below
``MIN_TRUSTED_TAU`` (a project heuristic) means halving prunes there on a ranking the full budget
does not keep (Bello et al. 2021, Sec. 7: deeper nets learn slower early). The report's panel and
``rs-search status`` print the same line (:func:`fidelity_line`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from rs_search.fidelity import MIN_TRIALS, MIN_TRUSTED_TAU, RankAgreement, agreement_at, trust_note
from rs_search.study.record import TrialRecord

__all__ = [
    "MIN_TRIALS",
    "MIN_TRUSTED_TAU",
    "FidelityData",
    "RungFidelity",
    "fidelity_data",
    "fidelity_line",
    "no_rungs_line",
]


@dataclass(frozen=True, kw_only=True)
class RungFidelity:
    """One rung: the trials behind its tau and their top-1 at the rung and at the end."""

    agreement: RankAgreement
    numbers: tuple[int, ...]
    at_rung: tuple[float, ...]
    final: tuple[float, ...]

    @property
    def epoch(self) -> int:
        return self.agreement.epoch

    @property
    def tau(self) -> float | None:
        return self.agreement.tau if self.agreement.defined else None

    @property
    def warn(self) -> bool:
        return self.agreement.too_low


@dataclass(frozen=True, kw_only=True)
class FidelityData:
    rungs: tuple[RungFidelity, ...]  # by rung epoch, ascending

    @property
    def warnings(self) -> tuple[RungFidelity, ...]:
        return tuple(r for r in self.rungs if r.warn)


def _trained_to_the_end(record: TrialRecord) -> float | None:
    """The final top-1 of a trial that trained the full budget, else None: complete, trained
    (not rejected by a hard limit, not a repeat standing in for another trial), finite top-1.
    Such a trial with a value at a rung trained past it (a complete trial is never stopped
    early: ``rs_search.search.objective``)."""
    top1 = record.top1
    if record.state != "COMPLETE" or record.rejected is not None or record.repeat_of is not None:
        return None
    return top1 if top1 is not None and math.isfinite(top1) else None


def fidelity_data(records: Sequence[TrialRecord]) -> FidelityData:
    """Per rung epoch any trial recorded, tau-b of (top-1 at the rung, final top-1) over the
    trials that trained past that rung to the full budget."""
    epochs = sorted({epoch for r in records for epoch in r.rungs})
    rungs = []
    for epoch in epochs:
        rows = []
        for record in records:
            final = _trained_to_the_end(record)
            if final is not None and epoch in record.rungs:
                rows.append((record.number, record.rungs[epoch], final))
        rungs.append(
            RungFidelity(
                agreement=agreement_at(epoch, [r[1] for r in rows], [r[2] for r in rows]),
                numbers=tuple(r[0] for r in rows),
                at_rung=tuple(r[1] for r in rows),
                final=tuple(r[2] for r in rows),
            )
        )
    return FidelityData(rungs=tuple(rungs))


def fidelity_line(rung: RungFidelity) -> str:
    """``rung epoch 3: Kendall tau 0.82 over 12 trials (rung vs final top-1)``, then why it
    cannot be judged or trusted when it cannot (the report and ``status`` print this line)."""
    tau = f"{rung.tau:.2f}" if rung.tau is not None else "n/a"
    line = (
        f"rung epoch {rung.epoch}: Kendall tau {tau} over {rung.agreement.n} trial"
        f"{'' if rung.agreement.n == 1 else 's'} trained past it (rung vs final top-1)"
    )
    note = trust_note(rung.agreement)
    return line if note is None else f"{line}; {note}"


def no_rungs_line() -> str:
    return "no rung recorded (halving off, or no trial has reached a rung yet)"
