"""What a benchmark table says about a search: pure functions over its curves.

- **True front**: the done candidates that no other done candidate beats at the full budget on
  (validation top-1 up, latency down): what a search that trained everything would return.
- **Hypervolume fraction**: the hypervolume of a set of (top-1, latency) points over the true
  front's, both against one reference point (``reference_point``). The fraction does not change
  when either objective is rescaled, so the units do not matter. The hypervolume is
  ``rs_search.selection.pareto.hypervolume`` (exact 2-D sweep), checked against ``moocore``
  (the maintained reference implementation, a dev dependency) in tests/bench/test_metrics.py.
- **Rank agreement** (the fidelity check the paper warns about: Bello et al. 2021, Sec. 7, the
  best model at a short budget is not the best at a long one): Kendall's tau-b between top-1 at
  an epoch and top-1 at the full budget over the table's done candidates. The statistic is
  ``rs_search.fidelity``'s, shared with a real study's report and status.
- **Front lost to halving**: which true-front members successive halving would prune, given the
  rung epochs and ``eta``. The rule is ``rs_search.search.halving.decide``'s: at a rung the
  field is ordered by NSGA-II's crowded comparison on (top-1 at the rung, latency) and the first
  ``max(1, n // eta)`` continue, exempt candidates (seeds) always. Here the whole table reaches
  each rung at once (synchronous successive halving); the search's asynchronous rule judges each
  trial against those that arrived before it, which keeps more early on and approaches this as
  the field grows. Written over plain arrays with ``selection_order`` (pure) rather than by
  importing the search package, which is being refactored; a test checks it against ``decide``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from rs_search.bench.grid import normalise
from rs_search.bench.table import Entry, Table
from rs_search.fidelity import RankAgreement, agreement_at, kendall_tau
from rs_search.selection.pareto import hypervolume as _pareto_hypervolume
from rs_search.selection.pareto import pareto_front, selection_order
from rs_search.space import Seed

__all__ = [
    "DIRECTIONS",
    "HalvingLoss",
    "RankAgreement",
    "front_lost_to_halving",
    "hypervolume",
    "hypervolume_fraction",
    "kendall_tau",
    "rank_agreement",
    "reference_point",
    "successive_halving",
    "table_points",
    "true_front",
]

DIRECTIONS: tuple[str, str] = ("maximize", "minimize")  # (top-1 %, latency ms)
#: Project heuristic: the reference point sits 10% of each objective's range beyond the worst
#: value in the table, so the extreme points of the front add area (Ishibuchi et al. 2018, "How
#: to specify a reference point in hypervolume calculation", discuss the choice; no single value
#: is standard).
REFERENCE_MARGIN = 0.1

FloatArray = npt.NDArray[np.float64]


# ------------------------------------------------------------------------------------- points


def table_points(table: Table) -> tuple[tuple[Entry, ...], FloatArray]:
    """The done entries and their (final top-1, latency median) points, shape ``(n, 2)``."""
    done = table.done
    points = np.array(
        [[e.final_top1, e.latency.median_ms if e.latency else math.nan] for e in done],
        dtype=np.float64,
    ).reshape(len(done), 2)
    return done, points


def true_front(table: Table) -> tuple[Entry, ...]:
    """The done entries on the Pareto front at the full budget, most accurate first."""
    done, points = table_points(table)
    if not done:
        return ()
    idx = pareto_front(points, DIRECTIONS)
    return tuple(sorted((done[i] for i in idx), key=lambda e: -e.final_top1))


def reference_point(points: npt.ArrayLike, margin: float = REFERENCE_MARGIN) -> tuple[float, float]:
    """(top-1, latency) just worse than every point: the worst value of each objective moved
    out by ``margin`` of its range (a range of 0 moves it by ``margin`` of the value, or 1)."""
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if p.shape[0] == 0:
        raise ValueError("a reference point needs at least one point")
    low, high = p.min(axis=0), p.max(axis=0)
    span = high - low
    span = np.where(span > 0, span, np.where(np.abs(high) > 0, np.abs(high), 1.0))
    return float(low[0] - margin * span[0]), float(high[1] + margin * span[1])


def hypervolume(points: npt.ArrayLike, reference: Sequence[float]) -> float:
    """Area dominated by (top-1, latency) ``points`` up to ``reference``."""
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if p.shape[0] == 0:
        return 0.0
    return _pareto_hypervolume(p, DIRECTIONS, list(reference))


def hypervolume_fraction(
    points: npt.ArrayLike, table: Table, reference: Sequence[float] | None = None
) -> float:
    """Hypervolume of ``points`` over that of the table's true front (1.0: the whole front
    found). ``reference`` defaults to ``reference_point`` of all the table's done candidates."""
    _, all_points = table_points(table)
    if all_points.shape[0] == 0:
        raise ValueError("the table has no done candidate")
    ref = reference if reference is not None else reference_point(all_points)
    best = hypervolume(all_points, ref)
    if best <= 0:
        raise ValueError("the table's true front has no hypervolume against the reference")
    return hypervolume(points, ref) / best


# ------------------------------------------------------------------------------ rank agreement


def rank_agreement(table: Table, epochs: Sequence[int] | None = None) -> list[RankAgreement]:
    """Rank agreement between each of ``epochs`` (default: every epoch before the budget) and
    the full budget, over the done candidates."""
    budget = table.header.budget_epochs
    curves = np.array([e.curve.val_top1 for e in table.done if e.curve], dtype=np.float64)
    curves = curves.reshape(-1, budget)
    out = []
    for epoch in epochs if epochs is not None else range(1, budget):
        if not 1 <= epoch <= budget:
            raise ValueError(f"epoch {epoch} is outside the table's 1..{budget}")
        out.append(agreement_at(epoch, curves[:, epoch - 1], curves[:, -1]))
    return out


# --------------------------------------------------------------------------- halving, replayed


def successive_halving(
    top1: npt.ArrayLike,
    latency: npt.ArrayLike,
    *,
    rungs: Sequence[int],
    eta: int,
    exempt: npt.ArrayLike | None = None,
) -> npt.NDArray[np.int64]:
    """Synchronous successive halving over candidates with curves ``top1`` (shape ``(n,
    budget)``, epoch 1 in column 0) and ``latency`` (shape ``(n,)``): for each candidate the rung
    epoch at which it is pruned, 0 when it reaches the full budget (see the module docstring)."""
    curves = np.asarray(top1, dtype=np.float64)
    lat = np.asarray(latency, dtype=np.float64)
    n = curves.shape[0]
    free = np.zeros(n, dtype=bool) if exempt is None else np.asarray(exempt, dtype=bool)
    if eta < 2:
        raise ValueError(f"eta must be >= 2, got {eta}")
    pruned_at = np.zeros(n, dtype=np.int64)
    alive = np.arange(n)
    for epoch in sorted(rungs):
        if not 1 <= epoch <= curves.shape[1]:
            raise ValueError(f"rung epoch {epoch} is outside the curves' 1..{curves.shape[1]}")
        if alive.size == 0:
            break
        points = np.column_stack([curves[alive, epoch - 1], lat[alive]])
        order = selection_order(points, DIRECTIONS)
        kept = max(1, alive.size // eta)
        keep = np.zeros(alive.size, dtype=bool)
        keep[order[:kept]] = True
        keep |= free[alive]
        pruned_at[alive[~keep]] = epoch
        alive = alive[keep]
    return pruned_at


@dataclass(frozen=True, kw_only=True)
class HalvingLoss:
    """True-front members halving would prune, and at which rung."""

    front: tuple[Entry, ...]
    pruned: tuple[tuple[Entry, int], ...]  # (entry, rung epoch)
    rungs: tuple[int, ...]
    eta: int

    @property
    def share(self) -> float:
        """Fraction of the true front pruned (0: halving keeps every front member)."""
        return len(self.pruned) / len(self.front) if self.front else math.nan


def front_lost_to_halving(
    table: Table, *, rungs: Sequence[int], eta: int, exempt_seeds: bool = True
) -> HalvingLoss:
    """Run ``successive_halving`` over the table's done candidates and report the true-front
    members it prunes. ``exempt_seeds``: the space's seeds continue whatever their place, as in
    the search (``rs_search.search.halving.exemption``)."""
    done, points = table_points(table)
    if not done:
        return HalvingLoss(front=(), pruned=(), rungs=tuple(rungs), eta=eta)
    seed_keys: set[str] = set()
    if exempt_seeds:
        budget = table.header.budget_epochs
        seed_keys = {_seed_key(s, table, budget) for s in table.header.space.seeds}
    curves = np.array([e.curve.val_top1 for e in done if e.curve], dtype=np.float64)
    exempt = np.array([e.key in seed_keys for e in done], dtype=bool)
    pruned_at = successive_halving(
        curves.reshape(len(done), -1), points[:, 1], rungs=rungs, eta=eta, exempt=exempt
    )
    front_idx = set(pareto_front(points, DIRECTIONS).tolist())
    front = tuple(done[i] for i in sorted(front_idx))
    lost = tuple((done[i], int(pruned_at[i])) for i in sorted(front_idx) if pruned_at[i])
    return HalvingLoss(front=front, pruned=lost, rungs=tuple(sorted(rungs)), eta=eta)


def _seed_key(seed: Seed, table: Table, budget: int) -> str:
    return normalise(seed.candidate(epochs=budget), table.header.space).key()
