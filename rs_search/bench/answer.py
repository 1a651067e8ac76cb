"""Training and latency answered from a benchmark table: what a replay hands the real search.

The search's objective (``rs_search.search.objective.Objective``) talks to two small protocols, a
``TrainLauncher`` and a ``LatencySource`` (``rs_search.search.deps``). Here both read a table
(``rs_search.bench.table``) instead of training and timing:

- :class:`TableLatency` answers an architecture's latency and memory with the table's figures on
  its target profile;
- :class:`TableLauncher` answers training with the candidate's recorded curve, one epoch at a
  time as the engine does: ``on_epoch`` gets each epoch's row (top-1 in percent, the fields of
  ``table.CURVE_FIELDS``, train accuracy measured like validation among them); ``False`` stops
  the run there (a halving decision). A "checkpoint" is the number of epochs answered into a trial's
  ``out_dir``: with ``resume=True`` a retry continues after them and its result holds the
  earlier epochs too, as the engine's does. ``should_stop``
  is polled before each epoch and raises ``TrialInterrupted`` with the epochs so far kept. Every
  epoch it answers (resumed epochs excepted) is counted in ``spent_epochs``: the compute the
  search spent, the x axis of a search-quality figure; ``spent_flops`` weighs each by the
  candidate's forward FLOPs per image.

A candidate is looked up by its ``key()`` once inactive parameters are canonical
(``SearchSpace.normalise``) and its epochs set to the table's budget. One the table does not hold
(a scaling rule's proposal outside it, or a sampled one when the table is a sample of a large
space) raises :class:`NotInTable`: the replay **skips** it rather than training it for real,
which would make a replay of many seeds take hours. ``NotInTable`` is an ``optuna.TrialPruned``:
the trial ends pruned before its first epoch, at no compute, so the sampler moves on (TPE ranks
a pruned trial without intermediate values among the worst; a failed trial it would ignore and
propose again: measured, TPE then asked 200 times in a row for candidates of a half-built table it
did not hold); ``skipped`` names the last one so the replay counts it.

A table entry that failed (diverged, out of memory, does not fit the target) raises what the
engine or the latency cache would have, so the search fails that trial for the same reason.

The table holds one training run per candidate (the table's seed), while a real search trains
trial ``n`` with seed ``n``: a replay freezes the seed-to-seed noise, so two trials of one
candidate see the same curve.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import optuna

from rs_search.bench.table import CURVE_FIELDS, Entry, Table
from rs_search.errors import CandidateOutOfMemory, TrainingDiverged, TrialInterrupted
from rs_search.search.deps import LatencyFigures, LatencyUnavailable
from rs_search.specs import ArchSpec, Candidate

__all__ = [
    "AnsweredEpoch",
    "AnsweredRun",
    "NotInTable",
    "TableAnswers",
    "TableLatency",
    "TableLauncher",
]


class NotInTable(optuna.TrialPruned):
    """The table holds no result for this candidate (or architecture): the replay skips it."""


@dataclass(frozen=True)
class AnsweredEpoch:
    """One epoch's row, standing in for the engine's ``EpochMetrics`` (``to_dict``)."""

    row: Mapping[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return dict(self.row)


@dataclass(frozen=True, kw_only=True)
class AnsweredRun:
    """Standing in for the engine's ``TrainResult``: the curve up to ``epochs_done``."""

    candidate: Candidate
    curve: list[AnsweredEpoch]
    epochs_done: int
    stopped_early: bool
    out_dir: Path | None


class TableAnswers:
    """A table indexed for look-ups: candidate -> done (or failed) entry, architecture ->
    latency figures."""

    def __init__(self, table: Table) -> None:
        self.table = table
        self.space = table.header.space
        self.budget = table.header.budget_epochs
        self.profile = str(table.header.profile.get("name", "table"))
        self._entries: dict[str, Entry] = {}
        self._latency: dict[str, Entry] = {}
        self._rows: dict[str, list[dict[str, Any]]] = {}
        self.skipped: str | None = None  # why the last look-up found nothing (the replay resets)
        for entry in table.entries:
            if entry.status == "pending":
                continue
            self._entries.setdefault(self.space.normalise(entry.candidate).key(), entry)
            if entry.latency is not None or entry.stage == "latency":
                self._latency.setdefault(entry.candidate.arch.key(), entry)

    def key(self, candidate: Candidate) -> str:
        """The key the table knows ``candidate`` by (canonical, at the table's budget)."""
        at_budget = replace(candidate, recipe=replace(candidate.recipe, epochs=self.budget))
        return self.space.normalise(at_budget).key()

    def entry(self, candidate: Candidate) -> Entry | None:
        return self._entries.get(self.key(candidate))

    def rows(self, entry: Entry) -> list[dict[str, Any]]:
        """The entry's curve as the engine's per-epoch rows (``epoch`` first, from 1)."""
        rows = self._rows.get(entry.key)
        if rows is None:
            assert entry.curve is not None, "only done entries have a curve"
            curve = entry.curve
            rows = [
                {"epoch": i + 1, **{name: getattr(curve, name)[i] for name in CURVE_FIELDS}}
                for i in range(len(curve))
            ]
            self._rows[entry.key] = rows
        return rows

    def latency_entry(self, arch: ArchSpec) -> Entry | None:
        return self._latency.get(arch.key())

    def miss(self, why: str) -> NotInTable:
        """The exception for a look-up that found nothing, remembered in ``skipped``."""
        self.skipped = why
        return NotInTable(why)


@dataclass
class TableLatency:
    """A ``LatencySource`` answered from the table (module docstring)."""

    answers: TableAnswers

    def figures(self, arch: ArchSpec) -> LatencyFigures:
        entry = self.answers.latency_entry(arch)
        if entry is None:
            raise self.answers.miss(
                f"latency: {arch.label} width {arch.width:g} at {arch.resolution}px is not in "
                "the table"
            )
        if entry.latency is None:
            why = entry.error or "no figure"
            if "does not fit" in why:
                raise CandidateOutOfMemory(f"does not fit on {self.answers.profile} ({why})")
            raise LatencyUnavailable(f"latency on {self.answers.profile}: {why}")
        return LatencyFigures(
            median_ms=entry.latency.median_ms,
            p90_ms=entry.latency.p90_ms,
            memory_mb=float(entry.latency.memory_mb or 0.0),
            profile=self.answers.profile,
        )


@dataclass
class TableLauncher:
    """A ``TrainLauncher`` answered from the table (module docstring)."""

    answers: TableAnswers
    spent_epochs: int = 0
    spent_flops: float = 0.0  # sum over answered epochs of the candidate's forward FLOPs/image
    _checkpoints: dict[str, int] = field(default_factory=dict, repr=False)

    def __call__(
        self,
        candidate: Candidate,
        *,
        out_dir: Path,
        resume: bool,
        seed: int,
        on_epoch: Callable[[Any], bool],
        should_stop: Callable[[], bool],
    ) -> AnsweredRun:
        entry = self.answers.entry(candidate)
        if entry is None:
            raise self.answers.miss(f"train: {_words(candidate)} is not in the table")
        if entry.status == "failed":
            why = entry.error or "failed"
            if entry.stage == "latency" or "memory" in why.lower():
                raise CandidateOutOfMemory(why)
            raise TrainingDiverged(why)
        rows = self.answers.rows(entry)
        where = str(out_dir)
        done = min(self._checkpoints.get(where, 0), len(rows)) if resume else 0
        curve = [AnsweredEpoch(row) for row in rows[:done]]
        stopped = False
        for row in rows[done:]:
            if should_stop():
                raise TrialInterrupted(f"stopped after epoch {len(curve)}")
            curve.append(AnsweredEpoch(row))
            self._checkpoints[where] = len(curve)
            self.spent_epochs += 1
            self.spent_flops += float(entry.flops or 0)
            if not on_epoch(curve[-1]):
                stopped = len(curve) < len(rows)
                break
        return AnsweredRun(
            candidate=candidate,
            curve=curve,
            epochs_done=len(curve),
            stopped_early=stopped,
            out_dir=out_dir,
        )


def _words(candidate: Candidate) -> str:
    from rs_search.bench.table import candidate_label

    return candidate_label(candidate)
