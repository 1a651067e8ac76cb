"""When the rules propose during a search, and which trials they start from: pure, on records.

``rs-search worker --auto-scale`` (``rs_search.search.proposals``) asks :func:`wants_proposal`
after each trial, orders the study's trained trials with :func:`views_for` (the Pareto front
first, largest hypervolume contribution first, ``ties.py``; then the other trained trials in
NSGA-II order) and skips candidates the study already has (:func:`existing_keys`), so the search
alternates between the sampler and the rules within the trial budget. Nothing here reads or
writes a study.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rs_search.selection.pareto import selection_order
from rs_search.selection.scaling import TrialView
from rs_search.selection.ties import front_order
from rs_search.study.record import TrialRecord, directions_of


def views_for(
    records: Sequence[TrialRecord],
    *,
    budget: int,
    objectives: Sequence[str],
    train_images: int | None = None,
) -> list[TrialView]:
    """Trained, feasible trials with a candidate as views: the Pareto front first (largest
    hypervolume contribution first), then the rest in NSGA-II order. ``train_images``: the
    study's training-set size (the regime the rules read; None: unknown)."""
    views = [
        view
        for record in records
        if record.usable
        and (
            view := TrialView.from_record(
                record, budget=budget, objectives=objectives, train_images=train_images
            )
        )
        is not None
        and view.values is not None
    ]
    if not views:
        return []
    arr = np.asarray([v.values for v in views], dtype=float)
    directions = list(directions_of(objectives))
    front = front_order(arr, directions)
    on_front = set(front)
    rest = [int(i) for i in selection_order(arr, directions) if int(i) not in on_front]
    return [views[i] for i in front + rest]


def existing_keys(records: Sequence[TrialRecord]) -> dict[str, int]:
    """Candidate key -> trial number, for every trial that ran or waits with a known candidate
    (a queued proposal counts by its proposed candidate)."""
    out: dict[str, int] = {}
    for record in records:
        for candidate in (record.candidate, record.proposal):
            if candidate is not None:
                out.setdefault(candidate.key(), record.number)
    return out


def wants_proposal(
    finished: TrialRecord, records: Sequence[TrialRecord], *, every: int = 1, budgeted: bool
) -> bool:
    """After ``finished``: propose when it came from the sampler (or a seed) and completed or was
    pruned, on every ``every``-th such trial, with no rule proposal already waiting and, in a
    study with a trial budget (``budgeted``), an empty slot for it to take over."""
    if every < 1:
        raise ValueError(f"every {every}: at least 1")
    if finished.is_rule_proposal or finished.state not in ("COMPLETE", "PRUNED"):
        return False
    if any(r.state == "WAITING" and r.is_rule_proposal for r in records):
        return False
    sampler_done = sum(
        1 for r in records if r.state in ("COMPLETE", "PRUNED") and not r.is_rule_proposal
    )
    if sampler_done % every:
        return False
    return not budgeted or any(r.is_empty_slot for r in records)
