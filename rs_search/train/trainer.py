"""The :class:`Trainer`: one candidate's training run, which owns everything the run mutates.

Like torchtitan's ``Trainer``, it is built once from its inputs (the candidate and a frozen
:class:`RunOptions`) and holds the device, the precision, the data and loaders, the model (DDP
under torch.distributed), the optimizer, schedule and EMA, the loss, the progress display and
the position in the run (epoch, step, curve); its methods are the run's verbs:
:meth:`~Trainer.train_epoch`, :meth:`~Trainer.evaluate`, :meth:`~Trainer.save` and
:meth:`~Trainer.fit`, which loops them. :func:`rs_search.train.engine.train` is the entry point.

Random streams: weights from ``seed``; data order and augmentation from (seed, epoch, image);
dropout and stochastic depth from a per-(seed, rank, epoch) stream, reseeded at every epoch
start, so a run resumed at an epoch boundary draws what the uninterrupted run would have; a
mid-epoch checkpoint carries the stream's state (:mod:`~rs_search.train.checkpoint`). The
batch-norm refresh after an epoch draws from a fixed stream of its own (epoch 0's) inside
``fork_rng``, and its augmented images are seeded per image, so its statistics depend on the
weights alone.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from rs_search.devices import resolve
from rs_search.errors import (
    CandidateOutOfMemory,
    DataError,
    RsSearchError,
    SpecError,
    TrainingDiverged,
    TrialInterrupted,
    is_out_of_memory,
)
from rs_search.specs import Candidate, RecipeSpec
from rs_search.train import checkpoint as ckpt
from rs_search.train.batchnorm import average_over_ranks, recompute_statistics
from rs_search.train.data import build_data
from rs_search.train.distributed import (
    Agreed,
    DistContext,
    all_reduce_sum,
    any_rank,
    broadcast_buffers,
    broadcast_flag,
)
from rs_search.train.loader import batches, build_loaders, build_subset_loader, default_workers
from rs_search.train.metrics import (
    EpochMetrics,
    TrainResult,
    epoch_line,
    peak_memory_mb,
    write_metrics,
)
from rs_search.train.progress import make_progress
from rs_search.train.recipe import (
    build_criterion,
    build_ema,
    build_optimizer,
    build_scheduler,
    current_lr,
)
from rs_search.train.step import DeviceNormalize, RunningSums, accumulate_gradients

__all__ = ["RunOptions", "Trainer"]


@dataclass(frozen=True, kw_only=True)
class RunOptions:
    """How to run a training (everything but the candidate and the callbacks).

    Attributes:
        data: a data spec (:data:`rs_search.train.data.DATA_SPECS`).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:INDEX`` (:mod:`rs_search.devices`).
        out_dir: where checkpoints (every epoch, last two kept) and ``metrics.json`` go; None
            writes nothing. Without ``resume``, a folder that already holds checkpoints is an
            error (nothing is overwritten).
        resume: continue from the newest loadable checkpoint in ``out_dir`` (a fresh start
            when there is none).
        stop_at_epoch: stop after this epoch (a halving rung); the schedule still spans
            ``recipe.epochs``.
        progress: a progress display on rank 0.
        seed: weights, data order, augmentation, dropout.
        num_workers: loader processes per training process; None: ``default_workers``.
        local_workers: training processes that share this machine's CPUs besides this group's
            own ranks (search workers side by side); the default loader processes divide the
            CPUs among them.
        micro_batch: images per forward/backward pass on each device; gradients of the
            per-device batch accumulate over ``ceil(batch / micro_batch)`` passes (for a global
            batch that does not fit). None: the whole per-device batch at once.
        check_every: steps between checks of ``should_stop`` and NaN (one collective under
            DDP); None: every step on CPU, every 25 on CUDA.
    """

    data: str = "digits"
    device: str = "auto"
    out_dir: Path | None = None
    resume: bool = False
    stop_at_epoch: int | None = None
    progress: bool = True
    seed: int = 0
    num_workers: int | None = None
    local_workers: int = 1
    micro_batch: int | None = None
    check_every: int | None = None

    def __post_init__(self) -> None:
        for name, least in (("num_workers", 0), ("local_workers", 1), ("micro_batch", 1)):
            value = getattr(self, name)
            if value is not None and value < least:
                flag = name.replace("_", "-")
                raise RsSearchError(f"--{flag} {value}: must be at least {least}")
        if self.check_every is not None and self.check_every < 1:
            raise ValueError(f"check_every: {self.check_every} must be >= 1")


def _amp_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """``auto``: bf16 on CUDA (the paper trains in bf16 on TPU), fp32 on CPU."""
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type != "cuda":
        raise SpecError("recipe.precision: fp16 needs a CUDA device; use bf16 or fp32 on CPU")
    return torch.float16


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _stream_seed(seed: int, rank: int, epoch: int) -> int:
    """Seed of one rank's random stream (dropout, stochastic depth) in one epoch."""
    return (seed * 1_000_003 + rank * 10_007 + epoch) % 2**63


def _per_rank_batch(recipe: RecipeSpec, ctx: DistContext) -> int:
    if recipe.batch_size % ctx.world_size:
        raise SpecError(
            f"recipe.batch_size: {recipe.batch_size} does not split evenly over "
            f"{ctx.world_size} processes"
        )
    return recipe.batch_size // ctx.world_size


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


@dataclass
class _Epoch:
    """The progress of the epoch being trained (or its rest after a mid-epoch resume)."""

    number: int
    step: int
    sums: RunningSums
    done_before: torch.Tensor  # [loss_sum, correct, count, seconds] of a resumed epoch's part
    nonfinite: torch.Tensor
    start: float = field(default_factory=time.perf_counter)

    def seconds(self) -> float:
        return time.perf_counter() - self.start + float(self.done_before[3])


class Trainer:
    """One training run of ``candidate`` (see the module docstring).

    ``on_epoch(metrics)`` runs on rank 0 after every epoch; returning False stops the run.
    ``should_stop()`` is polled every ``check_every`` steps; True checkpoints (mid-epoch, or
    after the epoch when it fires on its last step) and raises ``TrialInterrupted``.
    Deterministic refusals and agreed stops are raised as :class:`Agreed`
    (``engine.train`` unwraps them).
    """

    def __init__(
        self,
        candidate: Candidate,
        options: RunOptions,
        *,
        ctx: DistContext,
        on_epoch: Callable[[EpochMetrics], bool] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> None:
        self.candidate, self.options, self.ctx = candidate, options, ctx
        self.on_epoch, self.should_stop = on_epoch, should_stop
        self.curve: list[EpochMetrics] = []
        self.epoch = 0  # completed epochs
        self.step = 0  # steps done in epoch ``epoch + 1`` (a mid-epoch checkpoint)
        self.partial: torch.Tensor | None = None  # _Epoch.done_before of that part
        self.interrupted = False  # should_stop fired on an epoch's last step: stop after it
        try:
            self._check_options()
        except RsSearchError as exc:  # the same inputs on every rank: the same refusal
            raise Agreed(exc) from None
        if options.out_dir is not None and not options.resume:
            ckpt.refuse_overwrite(Path(options.out_dir), ctx)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
            torch.backends.cudnn.benchmark = True
        _seed_all(options.seed)
        self._build_data()
        torch.manual_seed(options.seed)  # the same initial weights on every rank
        self._build_model()
        if options.resume and options.out_dir is not None:
            self._resume(Path(options.out_dir))
        self.criterion = build_criterion(candidate.recipe)
        self.bar = make_progress(options.progress and ctx.is_main)

    # ------------------------------------------------------------------------------ set-up

    def _check_options(self) -> None:
        recipe, options, ctx = self.candidate.recipe, self.options, self.ctx
        self.device = resolve(
            options.device, local_rank=ctx.local_rank, local_ranks=ctx.local_world_size
        )
        self.amp = _amp_dtype(recipe.precision, self.device)
        self.last_epoch = recipe.epochs if options.stop_at_epoch is None else options.stop_at_epoch
        if not 1 <= self.last_epoch <= recipe.epochs:
            raise RsSearchError(
                f"stop_at_epoch: {options.stop_at_epoch} is out of range 1..{recipe.epochs}"
            )
        self.per_rank_batch = _per_rank_batch(recipe, ctx)
        self.check_every = options.check_every or (1 if self.device.type == "cpu" else 25)

    def _build_data(self) -> None:
        options, ctx = self.options, self.ctx
        self.source = build_data(options.data, self.candidate.arch, self.candidate.recipe)
        processes = ctx.local_world_size * options.local_workers
        self.workers = (
            default_workers(self.device, processes=processes)
            if options.num_workers is None
            else options.num_workers
        )
        self.train_loader, self.sampler, self.val_loader = build_loaders(
            self.source,
            per_rank_batch=self.per_rank_batch,
            ctx=ctx,
            device=self.device,
            workers=self.workers,
            seed=options.seed,
        )
        self.subset_loader, self.subset = build_subset_loader(
            self.source,
            batch_size=min(options.micro_batch or self.per_rank_batch, self.per_rank_batch),
            ctx=ctx,
            device=self.device,
            workers=self.workers,
            seed=options.seed,
        )
        self.steps_per_epoch = len(self.train_loader)
        if self.steps_per_epoch == 0:
            raise Agreed(
                DataError(
                    f"data {options.data!r}: {self.source.train_size} training images are fewer "
                    f"than one batch of {self.candidate.recipe.batch_size}; lower "
                    "recipe.batch_size"
                )
            )
        self.normalize = DeviceNormalize(self.source.mean, self.source.std, self.device)

    def _build_model(self) -> None:
        from rs_search.models import build_model

        recipe, ctx, device = self.candidate.recipe, self.ctx, self.device
        net = build_model(
            self.candidate.arch, dropout=recipe.dropout, stochastic_depth=recipe.stochastic_depth
        )
        self.model: nn.Module = net
        with self.out_of_memory_is_an_answer():
            net = net.to(device).to(memory_format=torch.channels_last)
            self.ema = build_ema(net, recipe)
            if ctx.distributed:  # DDP allocates its gradient buckets here
                ids = [device.index] if device.type == "cuda" else None
                self.model = DistributedDataParallel(net, device_ids=ids)
            else:
                self.model = net
        self.optimizer = build_optimizer(net, recipe)
        self.scheduler = build_scheduler(
            self.optimizer, recipe, steps_per_epoch=self.steps_per_epoch
        )
        self.scaler = torch.amp.GradScaler("cuda") if self.amp == torch.float16 else None

    def _resume(self, out_dir: Path) -> None:
        key = self._run_key()
        state = ckpt.load_for_resume(out_dir, key, self.ctx)
        if state is None:
            return
        self.load_state_dict(state)
        if self.step > 0 and self.ctx.world_size == 1:  # mid-epoch: continue the saved stream
            ckpt.set_rng_state(state["rng"], self.device)
        elif self.step > 0:  # rank 0's state is the only one saved: a fresh stream per rank
            seed = _stream_seed(self.options.seed, self.ctx.rank, self.epoch + 1) + self.step
            torch.manual_seed(seed)

    def _run_key(self) -> ckpt.RunKey:
        return ckpt.RunKey(
            candidate_key=self.candidate.key(),
            data=self.options.data,
            steps_per_epoch=self.steps_per_epoch,
        )

    @contextmanager
    def out_of_memory_is_an_answer(self) -> Iterator[None]:
        """Out-of-memory (CUDA, or the CPU allocator) becomes ``CandidateOutOfMemory``: for a
        search "does not fit" is a result, and the worker goes on (DESIGN.md section 3)."""
        try:
            yield
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            arch = self.candidate.arch
            micro = self.options.micro_batch
            per_pass = min(micro, self.per_rank_batch) if micro else self.per_rank_batch
            raise CandidateOutOfMemory(
                f"candidate {arch.label} width {arch.width:g} at {arch.resolution}px does not "
                f"fit in {self.device} memory with {per_pass} images per device"
                + (" (micro-batch)" if micro else "")
            ) from None

    # ---------------------------------------------------------------------------- state I/O

    def state_dict(self) -> dict[str, Any]:
        """Everything a resume needs, as tensors and plain values (``weights_only`` loads it)."""
        return {
            **self._run_key().stamp(),
            "candidate": self.candidate.to_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "partial": self.partial.cpu() if self.partial is not None else None,
            "model": _unwrap(self.model).state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": ckpt.rng_state(self.device),
            "curve": [m.to_dict() for m in self.curve],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        _unwrap(self.model).load_state_dict(state["model"])
        if self.ema is not None:
            if state.get("ema") is None:
                raise RsSearchError("the checkpoint has no EMA but the recipe uses one")
            self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler") is not None:
            self.scaler.load_state_dict(state["scaler"])
        self.curve = [EpochMetrics.from_dict(row) for row in state["curve"]]
        self.epoch = int(state["epoch"])
        self.step = int(state["step"])
        self.partial = state.get("partial")

    def save(self) -> Path | None:
        """Rank 0 writes a checkpoint of the current position (``epoch``, ``step``) to
        ``out_dir``, and at an epoch boundary ``metrics.json``; None when nothing is written."""
        out_dir = self.options.out_dir
        if not self.ctx.is_main or out_dir is None:
            return None
        out_dir = Path(out_dir)
        path = ckpt.save_checkpoint(out_dir, self.state_dict(), epoch=self.epoch, step=self.step)
        if self.step == 0:
            write_metrics(out_dir, self._metrics_payload())
        return path

    def _metrics_payload(self) -> dict[str, Any]:
        return {
            "candidate": self.candidate.to_dict(),
            "candidate_key": self.candidate.key(),
            "data": self.options.data,
            "device": str(self.device),
            "world_size": self.ctx.world_size,
            "seed": self.options.seed,
            "num_workers": self.workers,
            "micro_batch": self.options.micro_batch,
            "torch": torch.__version__,
            "epochs": self.candidate.recipe.epochs,
            "epochs_done": self.epoch,
            "finished": self.epoch >= self.candidate.recipe.epochs,
            "curve": [m.to_dict() for m in self.curve],
        }

    # -------------------------------------------------------------------------------- the run

    def fit(self) -> TrainResult:
        """Epochs until ``stop_at_epoch`` (or the recipe's end, or ``on_epoch``'s stop)."""
        stopped_early = False
        with self.out_of_memory_is_an_answer():
            while self.epoch < self.last_epoch and not stopped_early:
                stopped_early = self._end_epoch(self.train_epoch())
        return TrainResult(
            candidate=self.candidate,
            curve=list(self.curve),
            epochs_done=self.epoch,
            stopped_early=stopped_early,
            out_dir=Path(self.options.out_dir) if self.options.out_dir is not None else None,
        )

    def _end_epoch(self, metrics: EpochMetrics) -> bool:
        """Record the epoch, checkpoint, report, and agree on stopping; True: stop early."""
        self.curve.append(metrics)
        self.epoch += 1
        self.step, self.partial = 0, None
        stop = False
        if self.ctx.is_main:
            self.save()
            has_ema = self.ema is not None
            self.bar.end_epoch(epoch_line(metrics, self.candidate.recipe.epochs, has_ema=has_ema))
            if self.on_epoch is not None:
                stop = self.on_epoch(metrics) is False
        stopped_early = broadcast_flag(stop, self.ctx, self.device)
        if self.interrupted and self.epoch < self.last_epoch and not stopped_early:
            out_dir = self.options.out_dir
            where = f"checkpoint in {out_dir}" if out_dir is not None else "no output folder"
            raise Agreed(TrialInterrupted(f"stopped after epoch {self.epoch}; {where}"))
        return stopped_early

    def train_epoch(self) -> EpochMetrics:
        """One epoch (or the rest of one after a mid-epoch resume): train, evaluate, the row."""
        run = self._start_epoch()
        for images, labels in batches(self.train_loader):
            self._train_step(images, labels, run)
            run.step += 1
            if run.step % self.check_every == 0 or run.step == self.steps_per_epoch:
                self._check(run)
        return self._finish_epoch(run)

    def _start_epoch(self) -> _Epoch:
        number, first_step = self.epoch + 1, self.step
        self.sampler.set_epoch(number, skip=first_step * self.per_rank_batch)
        if first_step == 0:
            torch.manual_seed(_stream_seed(self.options.seed, self.ctx.rank, number))
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        sums = RunningSums(self.device)
        done_before = torch.zeros(4, dtype=torch.float64)
        if self.partial is not None:
            done_before = self.partial.double().cpu()
            sums.values += done_before[:2].to(self.device)
            sums.count = int(done_before[2])
        self.model.train()
        self.bar.start_epoch(
            number, self.candidate.recipe.epochs, self.steps_per_epoch, done=first_step
        )
        nonfinite = torch.zeros((), dtype=torch.bool, device=self.device)
        return _Epoch(
            number=number, step=first_step, sums=sums, done_before=done_before, nonfinite=nonfinite
        )

    def _train_step(self, images: torch.Tensor, labels: torch.Tensor, run: _Epoch) -> None:
        images = self.normalize(images)
        labels = labels.to(self.device, non_blocking=True)
        self.optimizer.zero_grad(set_to_none=True)
        outcome = accumulate_gradients(
            self.model,
            images,
            labels,
            criterion=self.criterion,
            micro_batch=self.options.micro_batch,
            amp=self.amp,
            scale=self.scaler.scale if self.scaler is not None else None,
            sums=run.sums,
        )
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update_parameters(_unwrap(self.model))
        run.nonfinite |= outcome.nonfinite

    def _check(self, run: _Epoch) -> None:
        """Every ``check_every`` steps: agree on NaN and stop flags, update the progress."""
        stop_here = self.should_stop() if self.should_stop is not None else False
        flags = [bool(run.nonfinite.item()), stop_here]
        diverged, stop_here = any_rank(flags, self.ctx, self.device)
        if diverged:
            raise Agreed(
                TrainingDiverged(
                    f"loss became NaN/inf at epoch {run.number} step {run.step} "
                    f"(lr {current_lr(self.optimizer):.3g}); lower recipe.lr_per_256 or check "
                    "the data"
                )
            )
        local = run.sums.host()
        done_before = run.done_before
        images_done = (local[2].item() - done_before[2].item()) * self.ctx.world_size
        count = max(local[2].item(), 1)
        self.bar.update(
            run.step,
            images_per_s=images_done / max(time.perf_counter() - run.start, 1e-9),
            loss=local[0].item() / count,
            top1=100 * local[1].item() / count,
        )
        if stop_here and run.step == self.steps_per_epoch:
            self.interrupted = True  # finish this epoch (evaluate, checkpoint), then stop
        elif stop_here:
            self._interrupt(run, local)

    def _interrupt(self, run: _Epoch, local: torch.Tensor) -> None:
        """Checkpoint mid-epoch and raise ``TrialInterrupted`` (on every rank)."""
        self.step = run.step
        self.partial = torch.cat([local, torch.tensor([run.seconds()], dtype=torch.float64)])
        path = self.save()
        where = f"checkpoint {path}" if path is not None else "no checkpoint (no output folder)"
        if not self.ctx.is_main and self.options.out_dir is not None:
            where = f"checkpoint in {self.options.out_dir}"
        raise Agreed(
            TrialInterrupted(
                f"stopped at epoch {run.number} step {run.step}/{self.steps_per_epoch}; {where}"
            )
        )

    def _finish_epoch(self, run: _Epoch) -> EpochMetrics:
        """All-reduce the epoch's train metrics, refresh the BN statistics, evaluate on the val
        split and on the fixed training subset (train accuracy measured like validation), and
        make the row."""
        train_seconds = time.perf_counter() - run.start
        lr = current_lr(self.optimizer)
        totals = all_reduce_sum(run.sums.host(), self.ctx)
        images_now = totals[2].item() - run.done_before[2].item() * self.ctx.world_size
        count = max(totals[2].item(), 1.0)
        self.refresh_statistics()
        val = self.evaluate(self.val_loader)
        self.subset.augmented = False
        train_eval = self.evaluate(self.subset_loader)
        return EpochMetrics(
            epoch=run.number,
            train_loss=totals[0].item() / count,
            train_top1=100.0 * totals[1].item() / count,
            val_loss=val[-1][0],
            val_top1=val[-1][1],
            val_loss_raw=val[0][0],
            val_top1_raw=val[0][1],
            train_eval_loss=train_eval[-1][0],
            train_eval_top1=train_eval[-1][1],
            train_eval_loss_raw=train_eval[0][0],
            train_eval_top1_raw=train_eval[0][1],
            images_per_s=images_now / max(train_seconds, 1e-9),
            epoch_seconds=run.seconds(),
            peak_memory_mb=peak_memory_mb(self.device),
            lr=lr,
        )

    def _eval_modules(self) -> list[nn.Module]:
        raw = _unwrap(self.model)
        return [raw] + ([self.ema.module] if self.ema is not None else [])

    @torch.no_grad()
    def refresh_statistics(self) -> None:
        """Recompute the BN statistics of the raw weights and the EMA on the fixed training
        subset, augmented as in training (:mod:`~rs_search.train.batchnorm`), average them over
        the ranks, and give every rank rank 0's buffers (one model's result on every rank).

        Skipped, leaving the running statistics, when some rank's share of the subset has fewer
        than two images (a batch of one has no variance)."""
        modules = self._eval_modules()
        if self.subset.smallest_share >= 2:
            self.subset.augmented = True
            devices = [self.device] if self.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices), self._autocast():
                # Stochastic depth and dropout draw as in training, from a fixed stream: the
                # statistics depend on the weights only, and training's streams are untouched.
                torch.manual_seed(_stream_seed(self.options.seed, self.ctx.rank, 0))
                images = (self.normalize(x) for x, _ in batches(self.subset_loader))
                recompute_statistics(modules, images)
            average_over_ranks(modules, self.ctx)
        for module in modules:
            broadcast_buffers(module, self.ctx, self.device)

    def _autocast(self) -> Any:
        return torch.autocast(
            device_type=self.device.type,
            dtype=self.amp or torch.float32,
            enabled=self.amp is not None,
        )

    @torch.no_grad()
    def evaluate(self, loader: Any) -> list[tuple[float, float]]:
        """(loss, top-1 %) of the raw weights and, with an EMA, of the EMA, in eval mode on the
        images of ``loader`` (each rank its shard), in one pass over the data: the val split,
        or the fixed training subset preprocessed like validation."""
        modules = self._eval_modules()
        for module in modules:
            module.eval()
        sums = torch.zeros(len(modules), 3, dtype=torch.float64, device=self.device)
        for images, labels in batches(loader):
            images = self.normalize(images)
            labels = labels.to(self.device, non_blocking=True)
            for i, module in enumerate(modules):
                with self._autocast():
                    logits = module(images)
                loss = self.criterion(logits.float(), labels)
                sums[i, 0] += loss.double() * labels.numel()
                sums[i, 1] += (logits.argmax(1) == labels).sum()
                sums[i, 2] += labels.numel()
        results = []
        for row in all_reduce_sum(sums, self.ctx):
            count = max(row[2].item(), 1.0)
            results.append((row[0].item() / count, 100.0 * row[1].item() / count))
        return results

    def close(self) -> None:
        """Close the progress display and stop the loader processes, however the run ended."""
        self.bar.close()
        _shutdown_loaders(self.train_loader, self.val_loader, self.subset_loader)


def _shutdown_loaders(*loaders: Any) -> None:
    """Stop the persistent loader processes now. They ignore SIGTERM (``loader.ignore_sigterm``),
    so a set left alive until interpreter exit (an exception's traceback keeps its iterator
    alive) made multiprocessing's exit handler, which terminates and then joins them, wait
    forever: a test session hung after its last test this way. A search worker, which trains
    trial after trial in one process, would also pile them up."""
    for loader in loaders:
        iterator = getattr(loader, "_iterator", None)
        shutdown = getattr(iterator, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
        if iterator is not None:
            loader._iterator = None
