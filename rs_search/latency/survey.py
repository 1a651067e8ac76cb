"""Do FLOPs predict latency here? Sample a space's architectures, measure each, rank-correlate.

What ``rs-search latency --space FILE --sample N`` computes (Bello et al. 2021, scaling rule 3:
FLOPs and parameter counts do not predict latency or memory, so measure on the hardware that
will run the model). The CLI only parses and prints.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rs_search.latency.result import LatencyResult
from rs_search.latency.stats import Inversion, inversions, spearman
from rs_search.specs import ArchSpec

# Draws per wanted architecture before giving up on finding more distinct ones (a small space
# has fewer than asked).
_DRAWS_PER_ARCH = 50


@dataclass(frozen=True)
class Row:
    arch: ArchSpec
    params: int
    flops: int
    result: LatencyResult


@dataclass(frozen=True)
class Survey:
    rows: tuple[Row, ...]  # in measurement order
    spearman_flops: float | None  # FLOPs vs latency over the ok figures; None: fewer than 3
    spearman_params: float | None
    # Pairs of *stable* figures where more FLOPs ran faster beyond both figures' spread: claims
    # about single pairs need trustworthy figures. Indices into ``stable``.
    stable: tuple[Row, ...]
    inversions: tuple[Inversion, ...]

    @property
    def ok(self) -> tuple[Row, ...]:
        return tuple(r for r in self.rows if r.result.ok)

    def to_dict(self) -> dict[str, Any]:
        return {
            "spearman_flops_latency": self.spearman_flops,
            "spearman_params_latency": self.spearman_params,
            "results": [
                {
                    "arch": r.arch.to_dict(),
                    "params": r.params,
                    "flops": r.flops,
                    **r.result.to_dict(),
                }
                for r in self.rows
            ],
        }


def sample_architectures(space: Any, n: int, *, seed: int) -> list[ArchSpec]:
    """Up to ``n`` distinct architectures of ``space`` (a ``SearchSpace``) drawn uniformly at
    random with ``seed``, through the space's own sampling code (an in-memory Optuna study with
    a seeded ``RandomSampler``); fewer when the space has fewer."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    archs: dict[str, ArchSpec] = {}
    for _ in range(_DRAWS_PER_ARCH * n):
        if len(archs) == n:
            break
        arch = space.sample(study.ask(), epochs=1).arch
        archs.setdefault(arch.key(), arch)
    return list(archs.values())


def survey(
    archs: list[ArchSpec],
    measure_one: Callable[[ArchSpec], LatencyResult],
    *,
    progress: Callable[[str], None] | None = None,
) -> Survey:
    """Measure every architecture with ``measure_one`` (a cached or fresh measurement) and
    compare latency with FLOPs and parameters."""
    from rs_search.latency.worker import arch_label
    from rs_search.models.complexity import count_flops, count_params

    rows = []
    for i, arch in enumerate(archs, 1):
        if progress is not None:
            progress(f"[{i}/{len(archs)}] {arch_label(arch)}")
        rows.append(Row(arch, count_params(arch), count_flops(arch), measure_one(arch)))
    ok = [r for r in rows if r.result.ok]
    latency = [float(r.result.median_ms or 0.0) for r in ok]
    stable = [r for r in ok if r.result.stable]
    return Survey(
        rows=tuple(rows),
        spearman_flops=spearman([float(r.flops) for r in ok], latency),
        spearman_params=spearman([float(r.params) for r in ok], latency),
        stable=tuple(stable),
        inversions=tuple(
            inversions(
                [float(r.flops) for r in stable],
                [float(r.result.median_ms or 0.0) for r in stable],
                [float(r.result.spread or 0.0) for r in stable],
            )
        ),
    )
