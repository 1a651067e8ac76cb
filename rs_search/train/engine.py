"""Train one candidate with the ResNet-RS recipe: the engine every search trial runs.

``train()`` builds a :class:`~rs_search.train.trainer.Trainer` (the model from
:func:`rs_search.models.build_model`, the data from :mod:`~rs_search.train.data`, the optimizer,
schedule and EMA from :mod:`~rs_search.train.recipe`) and runs its epochs: channels_last, bf16
autocast on CUDA, uint8 batches normalised on the device, per-step LR, EMA update per step; after
every epoch the batch-norm statistics of the EMA and of the raw weights recomputed on a fixed
training subset (:mod:`~rs_search.train.batchnorm`), both evaluated on the val split and on that
subset preprocessed like validation (train accuracy measured like validation), a checkpoint and
the curve (``metrics.json``).

Under torch.distributed (torchrun, or a search worker's group) it trains with DDP on the existing
group: ``recipe.batch_size`` is the global batch, split evenly over the ranks (and, with
``micro_batch``, into gradient-accumulation passes on each); metrics are all-reduced; only rank 0
writes files and calls ``on_epoch``; every stop decision (``on_epoch``, ``should_stop``, a NaN
loss on any rank) is agreed by one collective before any rank acts (DESIGN.md sections 3 and 5).
An error on one rank alone ends the group on every rank
(:func:`~rs_search.train.distributed.failures_end_the_group`).

Failures are errors of :mod:`rs_search.errors`: a NaN/inf loss is ``TrainingDiverged`` (exit 3),
out-of-memory is ``CandidateOutOfMemory`` (exit 4), bad data is ``DataError`` (exit 2), another
rank's failure is ``RankFailed`` (its exit status) and ``should_stop()`` returning True
checkpoints and raises ``TrialInterrupted``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from rs_search.specs import Candidate
from rs_search.train.distributed import context, failures_end_the_group
from rs_search.train.metrics import EpochMetrics, TrainResult
from rs_search.train.trainer import RunOptions, Trainer

__all__ = ["EpochMetrics", "RunOptions", "TrainResult", "train", "with_epochs"]


def train(
    candidate: Candidate,
    options: RunOptions | None = None,
    *,
    on_epoch: Callable[[EpochMetrics], bool] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Train ``candidate`` as ``options`` say (defaults: digits, auto device, no output folder)
    and return its per-epoch curve.

    ``on_epoch(metrics)`` runs on rank 0 after every epoch (after the checkpoint); returning
    False stops the run (``stopped_early``). ``should_stop()`` is polled every
    ``options.check_every`` steps on every rank; True on any rank checkpoints and raises
    ``TrialInterrupted``.
    """
    options = options or RunOptions()
    ctx = context()
    with failures_end_the_group(ctx):
        trainer = Trainer(candidate, options, ctx=ctx, on_epoch=on_epoch, should_stop=should_stop)
        try:
            return trainer.fit()
        finally:
            trainer.close()


def with_epochs(candidate: Candidate, epochs: int) -> Candidate:
    """``candidate`` with ``recipe.epochs`` replaced (``--epochs``); validated by RecipeSpec."""
    return replace(candidate, recipe=replace(candidate.recipe, epochs=epochs))
