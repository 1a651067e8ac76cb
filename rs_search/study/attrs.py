"""Names of what a study and its trials carry, in one place. Only the study layer reads them.

Trial user attributes (plain JSON, shown by optuna-dashboard):

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
- ``origin`` (``rule:depth`` / ``rule:width``), ``reason``, ``source_trial`` and ``proposal``
  (the proposed ``Candidate.to_dict()``): a scaling rule's proposal;
- ``fixed_candidate``: a whole candidate the worker trains instead of sampling one (a proposal
  that lies outside the study's space);
- ``repeat_of``: the sampler proposed a candidate an earlier trial trained (the same run, inactive
  parameters aside); this trial was pruned untrained, that trial's result standing for it
  (``rs_search.search.objective``, "Repeats");
- ``rs_slot``: an empty budget slot ``start`` enqueued (the sampler fills it);
- ``checkpoint_artifact``: the newest checkpoint in a remote artifact store (``{"id", "file"}``).

Trial system attributes written by Optuna: ``failed_trial`` (the original trial's number) and
``retry_history`` (``RetryHeartbeatStaleTrialCallback``), ``fixed_params`` (``enqueue_trial``).

Study user attributes: ``rs_search`` (the whole ``StudySettings``) and, flat for other tools,
``target``, ``space_fingerprint``, ``budget``, ``data``, ``objectives``, ``constraints``;
``rs_workers_started``: how many worker indexes ``start`` has handed out (each local worker samples
with the study's seed + its index, so two starts of one study never share a sampler stream).
"""

from __future__ import annotations

# -- trial user attributes ------------------------------------------------------------------------
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
ORIGIN = "origin"
REASON = "reason"
SOURCE_TRIAL = "source_trial"
PROPOSAL = "proposal"
FIXED_CANDIDATE = "fixed_candidate"
SLOT = "rs_slot"
REPEAT_OF = "repeat_of"
CHECKPOINT_ARTIFACT = "checkpoint_artifact"
RUNG_PREFIX = "rung_"

# -- trial system attributes (Optuna's) ------------------------------------------------------------
FAILED_TRIAL = "failed_trial"
RETRY_HISTORY = "retry_history"
FIXED_PARAMS = "fixed_params"

# -- study user attributes -------------------------------------------------------------------------
SETTINGS = "rs_search"
TARGET = "target"
SPACE_FINGERPRINT = "space_fingerprint"
BUDGET = "budget"
DATA = "data"
OBJECTIVES = "objectives"
CONSTRAINTS = "constraints"
# Older or hand-made studies (read tolerantly by ``info.study_info``).
LEGACY_BUDGET_EPOCHS = "budget_epochs"
LEGACY_TRIAL_BUDGET = ("trial_budget", "n_trials")

RULE_PREFIX = "rule:"  # ``origin`` of a scaling rule's proposal: ``rule:depth``, ``rule:width``


def rung_attr(epoch: int) -> str:
    return f"{RUNG_PREFIX}{epoch}"


# -- study user attributes (besides the settings, see rs_search.study.settings) ------------------
WORKERS_STARTED = "rs_workers_started"
