"""Rank agreement between a low fidelity and the full budget: does a rung rank like the end?

Successive halving keeps the trials that rank best at a rung (DESIGN.md section 3,
"Multi-fidelity"); that is sound only where the ranking at the rung is the ranking at the full
budget. Bello et al. (2021), Sec. 7, warn that it need not be: the best model after few epochs is
not the best after many (deeper nets learn slower early). The check is measured, never assumed:
Kendall's tau-b (``scipy.stats.kendalltau``) between top-1 at the rung and top-1 at the full
budget, over candidates that have both.

One pure statistic, three users: the benchmark tables (``rs_search.bench.metrics.rank_agreement``,
every candidate's whole curve), a real study's report and status (``rs_search.reports.
fidelity``, the trials that trained past each rung), and halving itself, which prunes at a rung
only where this check, over the study's full-budget trials, trusts it
(``rs_search.search.halving.regime_exemption``). Plain arrays in, no study, no table.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "MIN_TRIALS",
    "MIN_TRUSTED_TAU",
    "RankAgreement",
    "agreement_at",
    "kendall_tau",
    "trust_note",
]

#: Project heuristic (neither the paper nor its official code gives a number): below tau-b 0.5
#: the rung orders more than a quarter of the pairs of trials differently from the full budget
#: (without ties, the share of discordant pairs is (1 - tau) / 2), too many to let halving
#: prune there on that ranking.
MIN_TRUSTED_TAU = 0.5
#: Project heuristic: with fewer trials than this (under 10 pairs) one swapped pair moves tau
#: by more than 0.2 (2 / pairs), so a tau is shown but not judged.
MIN_TRIALS = 5


@dataclass(frozen=True, kw_only=True)
class RankAgreement:
    epoch: int
    tau: float  # Kendall tau-b of top-1 at ``epoch`` against the full budget (nan: undefined)
    p_value: float
    n: int  # candidates compared

    @property
    def defined(self) -> bool:
        return math.isfinite(self.tau)

    @property
    def too_low(self) -> bool:
        """Judged (at least ``MIN_TRIALS`` candidates, tau defined) and below
        ``MIN_TRUSTED_TAU``: halving at this epoch is not to be trusted."""
        return self.n >= MIN_TRIALS and self.defined and self.tau < MIN_TRUSTED_TAU


def kendall_tau(x: npt.ArrayLike, y: npt.ArrayLike) -> tuple[float, float]:
    """Kendall's tau-b with its p-value (scipy); nan when fewer than two points or a constant
    column leaves it undefined."""
    from scipy.stats import kendalltau

    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"need as many values at the rung as at the end: {a.shape} vs {b.shape}")
    if a.size < 2 or np.all(a == a[0]) or np.all(b == b[0]):
        return math.nan, math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = kendalltau(a, b)
    return float(result.statistic), float(result.pvalue)


def agreement_at(epoch: int, at_epoch: npt.ArrayLike, final: npt.ArrayLike) -> RankAgreement:
    """The rank agreement at ``epoch``: ``at_epoch[i]`` and ``final[i]`` are one candidate's
    top-1 at that epoch and at the full budget."""
    tau, p = kendall_tau(at_epoch, final)
    return RankAgreement(epoch=epoch, tau=tau, p_value=p, n=int(np.asarray(at_epoch).size))


def trust_note(agreement: RankAgreement) -> str | None:
    """Why a rung's ranking cannot be judged or trusted, in words; None when it can be."""
    if not agreement.defined:
        return "undefined (fewer than two trials, or all equal)"
    if agreement.n < MIN_TRIALS:
        return (
            f"too few trials to judge (fewer than {MIN_TRIALS}, a project heuristic: one "
            "swapped pair moves tau by more than 0.2)"
        )
    if agreement.too_low:
        return (
            f"warning: below {MIN_TRUSTED_TAU:g} (project heuristic: more than a quarter of the "
            "pairs ranked differently than at the full budget), halving at this rung is not "
            "to be trusted"
        )
    return None
