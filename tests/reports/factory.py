"""Build rs-search studies by hand with real Optuna: the study contract of DESIGN.md section 3
(values = (top-1 %, latency ms[, memory MB]); user attrs arch, arch_key, candidate, curve,
origin/reason), without training anything."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution
from optuna.study import StudyDirection
from optuna.trial import TrialState

from rs_search.specs import ArchSpec, Candidate, RecipeSpec
from rs_search.study.attrs import rung_attr

T0 = datetime(2025, 1, 1, 12, 0, 0)
DEPTHS = ("1-1-1-1", "2-2-2-2", "50")


def small_arch(
    layout: tuple[int, ...] = (1, 1, 1, 1), width: float = 0.25, resolution: int = 32
) -> ArchSpec:
    return ArchSpec(layout=layout, width=width, resolution=resolution, num_classes=10)


def make_curve(
    epochs: int,
    *,
    final_val: float,
    gap: float = 5.0,
    seconds: float = 30.0,
    train_eval: bool = True,
) -> list[dict[str, Any]]:
    """A plausible curve that ends at ``final_val`` with a train/val gap growing to ``gap``, the
    train top-1 measured like validation (``train_eval_*``, as the engine writes it; left out
    with ``train_eval=False``, as in rows written before it existed). The running train top-1
    over augmented, regularised batches sits 3 points below validation, as in a real
    regularised run."""
    rows = []
    for epoch in range(1, epochs + 1):
        frac = epoch / epochs
        val = final_val * (0.5 + 0.5 * frac)
        measured = {"train_eval_loss": 2.0 - frac, "train_eval_top1": val + gap * frac}
        rows.append(
            {
                "epoch": epoch,
                "train_loss": 2.2 - frac,
                "train_top1": val - 3.0,
                **(measured if train_eval else {}),
                "val_loss": 2.1 - frac,
                "val_top1": val,
                "val_loss_raw": 2.2 - frac,
                "val_top1_raw": val - 0.5,
                "images_per_s": 100.0,
                "epoch_seconds": seconds,
                "peak_memory_mb": 512.0,
                "lr": 0.1 * (1 - frac),
            }
        )
    return rows


def add_trial(
    study: optuna.Study,
    *,
    arch: ArchSpec,
    epochs: int = 10,
    values: tuple[float, ...] | None = None,
    state: TrialState = TrialState.COMPLETE,
    curve: list[dict[str, Any]] | None = None,
    origin: str | None = None,
    reason: str | None = None,
    constraints: tuple[float, ...] | None = None,
    source_trial: int | None = None,
    memory_mb: float | None = None,
    latency_ms: float | None = None,
    minute: int = 0,
    rungs: Sequence[int] = (),
) -> None:
    """One trial of the study contract; ``rungs``: epochs at which halving recorded the curve's
    validation top-1 (``rung_<epoch>``, as the objective writes it)."""
    candidate = Candidate(arch=arch, recipe=RecipeSpec(epochs=epochs, batch_size=32))
    if curve is None and values is not None:
        curve = make_curve(epochs, final_val=values[0])
    attrs: dict[str, Any] = {
        "arch": arch.to_dict(),
        "arch_key": arch.key(),
        "candidate": candidate.to_dict(),
        "curve": curve or [],
    }
    if origin is not None:
        attrs["origin"] = origin
    if reason is not None:
        attrs["reason"] = reason
    if source_trial is not None:
        attrs["source_trial"] = source_trial
    if memory_mb is not None:
        attrs["memory_mb"] = memory_mb
    if latency_ms is not None:
        attrs["latency_ms"] = latency_ms
    for epoch in rungs:
        attrs[rung_attr(epoch)] = (curve or [])[epoch - 1]["val_top1"]
    trial = optuna.trial.create_trial(
        state=state,
        values=list(values) if values is not None and state == TrialState.COMPLETE else None,
        params={"depth": arch.label},
        distributions={"depth": CategoricalDistribution(DEPTHS)},
        user_attrs=attrs,
        constraints={f"c{i}": c for i, c in enumerate(constraints)} if constraints else None,
    )
    if state != TrialState.WAITING:
        trial.datetime_start = T0 + timedelta(minutes=minute)
    if state.is_finished():
        trial.datetime_complete = T0 + timedelta(minutes=minute + 5)
    study.add_trial(trial)


def new_study(
    storage: str | None = None, *, name: str = "demo", memory: bool = False
) -> optuna.Study:
    directions = [StudyDirection.MAXIMIZE, StudyDirection.MINIMIZE]
    if memory:
        directions.append(StudyDirection.MINIMIZE)
    study = optuna.create_study(storage=storage, study_name=name, directions=directions)
    study.set_user_attr("budget_epochs", 10)
    study.set_user_attr("trial_budget", 12)
    study.set_user_attr("target", "cpu-fp32-b8")
    return study


def demo_study(storage: str | None = None, *, name: str = "demo") -> optuna.Study:
    """A study with every kind of trial the report draws: a front and dominated points, two
    budgets, three depths, widths and resolutions, a rule proposal, an infeasible, a failed and a
    running trial."""
    study = new_study(storage, name=name)
    a = small_arch((1, 1, 1, 1), 0.25, 32)
    b = small_arch((2, 2, 2, 2), 0.25, 32)
    c = small_arch((1, 1, 1, 1), 0.5, 32)
    d = small_arch((2, 2, 2, 2), 0.5, 48)
    e = small_arch((1, 1, 1, 1), 0.25, 48)
    add_trial(study, arch=a, memory_mb=100.0, epochs=5, values=(40.0, 2.0), minute=0)
    add_trial(study, arch=b, memory_mb=180.0, epochs=5, values=(45.0, 3.0), minute=5)
    add_trial(
        study, arch=c, memory_mb=150.0, epochs=5, values=(44.0, 3.5), minute=10
    )  # dominated by b
    add_trial(study, arch=a, memory_mb=100.0, epochs=10, values=(48.0, 2.0), minute=15, rungs=[3])
    add_trial(study, arch=b, memory_mb=180.0, epochs=10, values=(55.0, 3.0), minute=20, rungs=[3])
    add_trial(
        study,
        arch=d,
        memory_mb=400.0,
        epochs=10,
        values=(58.0, 6.0),
        minute=25,
        origin="rule:depth",
        source_trial=3,
        reason="depth 1-1-1-1→2-2-2-2: train/val gap 7.1 points at 10 epochs",
        rungs=[3],
    )
    add_trial(
        study, arch=e, memory_mb=130.0, epochs=10, values=(50.0, 2.5), minute=30, constraints=(1.0,)
    )  # infeasible
    add_trial(
        study,
        arch=c,
        epochs=10,
        values=None,
        state=TrialState.FAIL,
        minute=35,
        curve=make_curve(3, final_val=20.0),
    )
    add_trial(
        study,
        arch=d,
        epochs=10,
        values=None,
        state=TrialState.RUNNING,
        minute=40,
        curve=make_curve(4, final_val=30.0),
    )
    return study


def cache_latency(storage: str, figures: dict[ArchSpec, float], *, profile: str) -> None:
    """Store latency figures for ``profile`` in the study database's latency cache, as a latency
    worker on that hardware would (``rs-search latency-worker``)."""
    from rs_search.latency.cache import LatencyCache
    from rs_search.latency.profiles import BUILTIN_PROFILES
    from rs_search.latency.result import LatencyResult

    hardware = BUILTIN_PROFILES[profile]
    with LatencyCache(storage) as cache:
        for arch, median_ms in figures.items():
            cache.put(
                arch,
                hardware,
                LatencyResult(
                    arch_key=arch.key(),
                    profile_name=hardware.name,
                    profile_key=hardware.key(),
                    device_name="test accelerator",
                    torch_version="test",
                    status="ok",
                    median_ms=median_ms,
                    p90_ms=median_ms * 1.05,
                    spread=0.01,
                    peak_memory_mb=64.0,
                    iterations=50,
                    repeats=5,
                    stable=True,
                    measured_at="2025-01-01T12:00:00+00:00",
                    batch_size=hardware.batch_size,
                ),
            )
