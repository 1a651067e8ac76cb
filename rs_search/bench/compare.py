"""Search methods compared on one benchmark table over many seeds: the data behind
``benchmarks/search_quality.py`` (issue 11 item 3).

Every method gets the same compute: the epochs a search without halving spends on
``compute_trials`` trials (``compute_trials x budget``, "the no-halving compute"). A run's quality
after a share of it is the hypervolume of the (top-1, latency) front of the trials that completed
training within that share, as a fraction of the table's true front (``metrics``; one reference
point for the whole comparison, ``replay.table_reference``). Medians and interquartile ranges are
over seeds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rs_search.bench.answer import TableAnswers
from rs_search.bench.replay import Method, Run, median_iqr, replay, table_reference
from rs_search.bench.table import Table

__all__ = [
    "FRACTIONS",
    "Comparison",
    "MethodSummary",
    "Verdict",
    "compare",
    "hypervolume_curve",
    "summarise",
    "verdict",
]

FRACTIONS: tuple[float, ...] = (0.10, 0.25, 0.50, 1.00)


@dataclass(frozen=True, kw_only=True)
class Comparison:
    table: Table
    methods: tuple[Method, ...]
    seeds: tuple[int, ...]
    compute_trials: int
    runs: dict[str, tuple[Run, ...]]  # method name -> one run per seed
    reference: tuple[float, float]

    @property
    def compute(self) -> int:
        """The no-halving compute in epochs."""
        return self.compute_trials * self.table.header.budget_epochs

    def hypervolumes(self, name: str, fraction: float) -> list[float]:
        return [
            r.hypervolume_at(self.table, fraction * self.compute, self.reference)
            for r in self.runs[name]
        ]


def compare(
    table: Table,
    methods: Sequence[Method],
    *,
    seeds: Sequence[int],
    compute_trials: int,
    progress: Callable[[Method, int], None] | None = None,
) -> Comparison:
    """Replay every method with every seed on ``table`` (``progress`` hears each run start)."""
    if compute_trials < 1:
        raise ValueError(f"compute_trials {compute_trials}: at least 1")
    answers = TableAnswers(table)
    compute = compute_trials * table.header.budget_epochs
    runs: dict[str, tuple[Run, ...]] = {}
    for method in methods:
        done = []
        for seed in seeds:
            if progress is not None:
                progress(method, seed)
            done.append(replay(table, method, seed=seed, compute=compute, answers=answers))
        runs[method.name] = tuple(done)
    return Comparison(
        table=table,
        methods=tuple(methods),
        seeds=tuple(seeds),
        compute_trials=compute_trials,
        runs=runs,
        reference=table_reference(table),
    )


@dataclass(frozen=True, kw_only=True)
class MethodSummary:
    """One method over the seeds: hypervolume (median, q25, q75) at each of ``FRACTIONS`` and
    what the runs spent and met (means per run)."""

    method: Method
    hypervolume: dict[float, tuple[float, float, float]]
    epochs: float
    flops: float
    trials: float
    complete: float
    pruned: float
    repeats: float  # pruned untrained: an earlier trial had the candidate
    exact_repeats: float  # a candidate, as sampled, seen before in the run (any outcome)
    no_effect_variants: float
    skipped_sampler: float  # not in the table: sampled (or suggested by MO-ASHA)
    skipped_rule: float  # not in the table: a scaling rule's proposal
    idle_runs: int  # runs that ended before spending the compute (nothing new to train)
    front_pruned: float  # of the true-front candidates the runs trained, the share pruned


def summarise(comparison: Comparison) -> list[MethodSummary]:
    from rs_search.bench.metrics import true_front

    answers_key = TableAnswers(comparison.table).key
    front = {answers_key(e.candidate) for e in true_front(comparison.table)}
    out = []
    for method in comparison.methods:
        runs = comparison.runs[method.name]
        lost = [r.front_tried(front) for r in runs]
        tried = sum(t for _, t in lost)
        n = max(1, len(runs))

        def mean(values: Sequence[float], count: int = n) -> float:
            return sum(values) / count

        out.append(
            MethodSummary(
                method=method,
                hypervolume={
                    f: median_iqr(comparison.hypervolumes(method.name, f)) for f in FRACTIONS
                },
                epochs=mean([r.spent for r in runs]),
                flops=mean([r.flops for r in runs]),
                trials=mean([len(r.events) for r in runs]),
                complete=mean([r.count("complete") for r in runs]),
                pruned=mean([r.count("pruned") for r in runs]),
                repeats=mean([r.count("repeat") for r in runs]),
                exact_repeats=mean([r.exact_repeats for r in runs]),
                no_effect_variants=mean([r.no_effect_variants for r in runs]),
                skipped_sampler=mean(
                    [r.count("skipped") - r.count("skipped", origin="rule") for r in runs]
                ),
                skipped_rule=mean([r.count("skipped", origin="rule") for r in runs]),
                idle_runs=sum(1 for r in runs if r.spent < comparison.compute),
                front_pruned=sum(p for p, _ in lost) / tried if tried else math.nan,
            )
        )
    return out


def hypervolume_curve(
    comparison: Comparison, name: str, points: int = 41
) -> tuple[list[float], list[float], list[float], list[float]]:
    """(share of the no-halving compute, median, q25, q75) on an even grid from 0 to 1."""
    xs = [i / (points - 1) for i in range(points)]
    med, low, high = [], [], []
    for x in xs:
        m, q25, q75 = median_iqr(comparison.hypervolumes(name, x))
        med.append(m)
        low.append(q25)
        high.append(q75)
    return xs, med, low, high


@dataclass(frozen=True, kw_only=True)
class Verdict:
    """Issue 11's bar: rs-search's default at ``at`` of the compute reaches at least the median
    of the best method without halving at 100%."""

    default: str
    default_median: float
    at: float
    best: str
    best_median: float

    @property
    def met(self) -> bool:
        return self.default_median >= self.best_median

    def words(self) -> str:
        verdict = "met" if self.met else "NOT met"
        return (
            f"{self.default} at {self.at:.0%} of the compute: median hypervolume "
            f"{self.default_median:.3f}; best without halving ({self.best}) at 100%: "
            f"{self.best_median:.3f}: {verdict}"
        )


def verdict(comparison: Comparison, *, default: str, at: float = 0.5) -> Verdict:
    """The bar for ``default`` against every rs-search method without halving (GP included)."""
    mine = median_iqr(comparison.hypervolumes(default, at))[0]
    plain = [
        (median_iqr(comparison.hypervolumes(m.name, 1.0))[0], m.name)
        for m in comparison.methods
        if m.engine == "rs-search" and not m.halving
    ]
    best_value, best_name = max(plain) if plain else (math.nan, "none")
    return Verdict(
        default=default, default_median=mine, at=at, best=best_name, best_median=best_value
    )
