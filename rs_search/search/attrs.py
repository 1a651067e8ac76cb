"""Names of what a trial carries, in one place: reports, export and the scaling rules read these.

User attributes (plain JSON, shown by optuna-dashboard):

- ``arch`` (``ArchSpec.to_dict()``), ``arch_key``, ``candidate`` (``Candidate.to_dict()``),
  ``seed_name`` for an enqueued seed: the latency worker's contract (issue 4) and export's input;
- ``params_m``; ``latency_ms``, ``latency_p90_ms``, ``memory_mb`` (from the latency cache, on the
  study's target profile) and ``latency_profile``;
- ``curve``: the per-epoch metrics (``EpochMetrics.to_dict()`` list), pruned trials included;
- ``rung_<epoch>``: validation top-1 at a successive-halving rung; ``halving``: the decisions;
- ``rejected``: why a candidate broke a hard limit and was never trained;
- ``fail_reason``: why a trial failed (NaN loss, out of memory, bad data, latency error);
- ``resumed_from_epoch``: a retried trial continued from this checkpoint epoch;
- ``interrupted``: the worker got SIGTERM and handed the trial back (a retry is queued);
- ``worker``: host and pid that ran the trial; ``world_size``: processes that trained it;
- ``fixed_candidate``: a whole candidate the worker trains instead of sampling one (a scaling
  rule's proposal that lies outside the study's space).

System attributes written by Optuna's ``RetryHeartbeatStaleTrialCallback``: ``failed_trial``
(the original trial's number) and ``retry_history``.
"""

from __future__ import annotations

from typing import Any

from optuna.trial import FrozenTrial, TrialState

ARCH = "arch"
ARCH_KEY = "arch_key"
CANDIDATE = "candidate"
SEED_NAME = "seed_name"
PARAMS_M = "params_m"
LATENCY_MS = "latency_ms"
LATENCY_P90_MS = "latency_p90_ms"
MEMORY_MB = "memory_mb"
LATENCY_PROFILE = "latency_profile"
CURVE = "curve"
HALVING = "halving"
REJECTED = "rejected"
FAIL_REASON = "fail_reason"
RESUMED_FROM = "resumed_from_epoch"
INTERRUPTED = "interrupted"
WORKER = "worker"
WORLD_SIZE = "world_size"
# A candidate given whole (``Candidate.to_dict()``) instead of as the sampler's parameters: a rule
# proposal outside the study's space (``rs_search.selection.autoscale``); the worker trains it.
FIXED_CANDIDATE = "fixed_candidate"
# "rule:depth" / "rule:width" on a trial the scaling rules queued (rs_search.selection.autoscale)
ORIGIN = "origin"
SLOT = "rs_slot"  # user attr of a budget slot enqueued by `start` (see worker.py)


def rung_attr(epoch: int) -> str:
    return f"rung_{epoch}"


def origin(trial: FrozenTrial) -> int:
    """The number of the trial this one retries (itself when it is not a retry).

    A retry inherits its original's user attributes (curve, rung values), so everything that
    counts trials per candidate counts origins, not trial numbers.
    """
    value = trial.system_attrs.get("failed_trial")
    return int(value) if value is not None else trial.number


def is_finished(trial: FrozenTrial) -> bool:
    """Counts against the trial budget: complete, pruned, or failed for a reason of its own.

    A trial failed because its worker died (heartbeat went stale) or was interrupted is not
    finished: a retry stands in for it.
    """
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return trial.state == TrialState.FAIL and FAIL_REASON in trial.user_attrs


def curve(trial: FrozenTrial) -> list[dict[str, Any]]:
    value = trial.user_attrs.get(CURVE) or []
    return list(value) if isinstance(value, list) else []
