"""Syne Tune's MO-ASHA driven on a benchmark table (issue 11: the method a Syne Tune user picks).

``syne_tune.optimizer.schedulers.multiobjective.MOASHA`` (Salinas et al. 2021; ``syne-tune`` on
PyPI, a benchmark-only dependency, the ``bench`` extra) is a scheduler: it suggests a
configuration (uniformly at random from its config space) and, after each reported epoch, says
whether the trial continues (asynchronous successive halving, non-dominated sorting at a rung).
We drive it as Syne Tune's own simulator does, one worker: suggest, then report the table's
epochs one by one (``time_attr`` the epoch; metrics ``error`` = 100 - top-1 and ``latency``, both
minimized) until it says stop or the budget is reached. Its settings are Syne Tune's defaults
(``grace_period`` 1, ``reduction_factor`` 3, one bracket) with ``max_t`` the table's budget: what
a user of the library gets.

The config space is the table's space, every searched parameter a ``choice`` of its values (a
continuous range a ``uniform``/``loguniform``). Syne Tune has no conditional parameters, so it
samples RandAugment's magnitude with no RandAugment layer: such no-effect variants, and exact
repeats, are trained again and counted (a user of the library would train them). A configuration
the table does not hold is skipped and counted, as in the rs-search replay. MO-ASHA draws its
configurations and brackets from NumPy's global random state; it is seeded with the run's seed
and restored afterwards. Nothing reads a clock.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import numpy as np

from rs_search.bench.answer import TableAnswers
from rs_search.bench.replay import DEFAULT_MAX_IDLE, Method, Run, TrialEvent
from rs_search.bench.table import Table, candidate_label
from rs_search.errors import RsSearchError
from rs_search.space import Choice, FloatRange, IntRange, SearchSpace, candidate_from_values

__all__ = ["config_space", "replay_moasha"]

_EPOCH = "epoch"
_METRICS = ["error", "latency"]
_NO_CLOCK = datetime(2000, 1, 1)  # Syne Tune's Trial wants a creation time; it decides nothing


def _syne_tune() -> Any:
    try:
        from syne_tune.optimizer.schedulers.multiobjective.moasha import MOASHA
    except ImportError:
        raise RsSearchError(
            "MO-ASHA needs syne-tune (a benchmark-only dependency): pip install 'syne-tune'"
        ) from None
    return MOASHA


def config_space(space: SearchSpace) -> dict[str, Any]:
    """The space's searched parameters as a Syne Tune config space (Optuna names as keys)."""
    from syne_tune.config_space import choice, loguniform, uniform

    out: dict[str, Any] = {}
    for p in space.searched_params():
        d = p.domain
        if isinstance(d, Choice):
            out[p.name] = choice(list(d.choices))
        elif isinstance(d, IntRange):
            out[p.name] = choice(list(d.values()))
        elif isinstance(d, FloatRange) and d.step is not None:
            out[p.name] = choice(list(d.values() or ()))
        elif isinstance(d, FloatRange):
            out[p.name] = loguniform(d.low, d.high) if d.log else uniform(d.low, d.high)
    return out


@contextmanager
def _numpy_seeded(seed: int) -> Iterator[None]:
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def replay_moasha(
    table: Table,
    method: Method,
    *,
    seed: int,
    compute: int,
    answers: TableAnswers | None = None,
    max_idle: int = DEFAULT_MAX_IDLE,
) -> Run:
    """MO-ASHA on ``table`` until ``compute`` epochs are spent (module docstring)."""
    from syne_tune.backend.trial_status import Trial
    from syne_tune.optimizer.scheduler import SchedulerDecision

    moasha = _syne_tune()
    answers = answers or TableAnswers(table)
    space = table.header.space
    budget = table.header.budget_epochs
    fixed = space.fixed_params()
    events: list[TrialEvent] = []
    spent = 0
    idle = 0
    stopped = "compute spent"
    with _numpy_seeded(seed):
        scheduler = moasha(
            config_space=config_space(space),
            metrics=_METRICS,
            do_minimize=True,
            time_attr=_EPOCH,
            max_t=budget,
            grace_period=1,
            reduction_factor=method.eta,
            random_seed=seed,
        )
        number = 0
        while spent < compute:
            if idle >= max_idle:
                stopped = f"{max_idle} trials in a row trained nothing"
                break
            suggestion = scheduler.suggest()
            config = dict(suggestion.config)
            candidate = candidate_from_values({**fixed, **config}, epochs=budget)
            entry = answers.entry(candidate)
            key, raw = answers.key(candidate), candidate.key()
            label = candidate_label(candidate)
            if entry is None or entry.status != "done" or entry.latency is None:
                why = "not in the table" if entry is None else f"failed in the table: {entry.error}"
                events.append(
                    TrialEvent(
                        number=number, origin="moasha", state="skipped", key=key, raw_key=raw,
                        label=label, epochs=0, flops=0.0, spent=spent, why=why,
                    )
                )  # fmt: skip
                number += 1
                idle += 1
                continue
            idle = 0
            trial = Trial(trial_id=number, config=config, creation_time=_NO_CLOCK)
            scheduler.on_trial_add(trial)
            rows = answers.rows(entry)
            latency = entry.latency.median_ms
            done = 0
            decision = SchedulerDecision.CONTINUE
            result: dict[str, Any] = {}
            for row in rows:
                done += 1
                result = {_EPOCH: done, "error": 100.0 - row["val_top1"], "latency": latency}
                decision = scheduler.on_trial_result(trial, result)
                if decision == SchedulerDecision.STOP:
                    break
            spent += done
            complete = done == budget
            if complete:
                scheduler.on_trial_complete(trial, result)
            else:
                scheduler.on_trial_remove(trial)
            events.append(
                TrialEvent(
                    number=number,
                    origin="moasha",
                    state="complete" if complete else "pruned",
                    key=key,
                    raw_key=raw,
                    label=label,
                    epochs=done,
                    flops=float(entry.flops or 0) * done,
                    spent=spent,
                    point=(rows[-1]["val_top1"], latency) if complete else None,
                )
            )
            number += 1
    return Run(method=method, seed=seed, events=tuple(events), stopped=stopped)
