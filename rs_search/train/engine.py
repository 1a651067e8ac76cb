"""Train one candidate with the ResNet-RS recipe: the engine every search trial runs.

``train()`` builds the model (:func:`rs_search.models.build_model`), the data
(:mod:`~rs_search.train.data`), the optimizer, schedule and EMA (:mod:`~rs_search.train.recipe`),
and runs the epochs: channels_last, bf16 autocast on CUDA, per-step LR, EMA update per step,
evaluation of the EMA and of the raw weights after every epoch, a checkpoint and the curve
(``metrics.json``) after every epoch.

Under torch.distributed (torchrun, or a search worker's group) it trains with DDP on the existing
group: ``recipe.batch_size`` is the global batch, split evenly over the ranks; metrics are
all-reduced; only rank 0 writes files and calls ``on_epoch``; every stop decision (``on_epoch``,
``should_stop``, a NaN loss on any rank) is agreed by one collective before any rank acts
(DESIGN.md sections 3 and 5).

Failures are errors of :mod:`rs_search.errors`: a NaN/inf loss is ``TrainingDiverged`` (exit 3),
CUDA out-of-memory is ``CandidateOutOfMemory`` (exit 4), bad data is ``DataError`` (exit 2) and
``should_stop()`` returning True checkpoints and raises ``TrialInterrupted``.
"""

from __future__ import annotations

import json
import logging
import random
import resource
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from rs_search.errors import (
    CandidateOutOfMemory,
    DataError,
    RsSearchError,
    SpecError,
    TrainingDiverged,
    TrialInterrupted,
)
from rs_search.specs import Candidate
from rs_search.train import checkpoint as ckpt
from rs_search.train.data import build_data
from rs_search.train.distributed import (
    DistContext,
    all_reduce_sum,
    any_rank,
    broadcast_buffers,
    broadcast_flag,
    context,
)
from rs_search.train.loader import EpochSampler, batches, build_loaders, default_workers
from rs_search.train.progress import EpochProgress, make_progress
from rs_search.train.recipe import (
    WarmupEma,
    build_criterion,
    build_ema,
    build_optimizer,
    build_scheduler,
    current_lr,
)

__all__ = ["EpochMetrics", "TrainResult", "evaluate", "resolve_device", "train", "with_epochs"]

log = logging.getLogger("rs_search.train")

CHECKPOINT_FORMAT = 1
METRICS_FILE = "metrics.json"


@dataclass(frozen=True, kw_only=True)
class EpochMetrics:
    """One row of the training curve. Top-1 values are percentages (0-100).

    ``val_*`` are the EMA weights' results when the recipe has an EMA (what the paper reports),
    else the raw weights'; ``val_*_raw`` are always the raw weights'. ``train_*`` are running
    averages over the epoch's augmented batches. ``images_per_s`` counts training images of all
    ranks per second of the training phase; ``epoch_seconds`` includes evaluation.
    ``peak_memory_mb``: peak CUDA memory allocated by this process in the epoch, or on CPU the
    process's peak resident set size so far. ``lr``: the LR after the epoch's last step, where
    the next epoch starts (the peak after the warm-up, 0 after the last epoch).
    """

    epoch: int
    train_loss: float
    train_top1: float
    val_loss: float
    val_top1: float
    val_loss_raw: float
    val_top1_raw: float
    images_per_s: float
    epoch_seconds: float
    peak_memory_mb: float
    lr: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EpochMetrics:
        return cls(**data)


@dataclass(frozen=True, kw_only=True)
class TrainResult:
    """What a run produced: the curve up to ``epochs_done``; ``stopped_early`` when ``on_epoch``
    asked to stop (reaching ``stop_at_epoch`` is not early)."""

    candidate: Candidate
    curve: list[EpochMetrics]
    epochs_done: int
    stopped_early: bool
    out_dir: Path | None

    @property
    def final(self) -> EpochMetrics | None:
        return self.curve[-1] if self.curve else None


# ------------------------------------------------------------------------------------ set-up


def resolve_device(device: str, ctx: DistContext) -> torch.device:
    """``auto`` -> CUDA when available else CPU; under DDP on CUDA each rank takes
    ``cuda:LOCAL_RANK``. An unavailable CUDA device is a one-line error (exit 2)."""
    name = device.strip().lower()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise RsSearchError(
                f"device {device!r}: CUDA is not available on this machine; use --device cpu"
            )
        index = ctx.local_rank if name == "cuda" else _cuda_index(name, device)
        if index >= torch.cuda.device_count():
            raise RsSearchError(
                f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
        return torch.device("cuda", index)
    raise RsSearchError(f"device {device!r}: unknown; allowed: auto, cpu, cuda, cuda:INDEX")


def _cuda_index(name: str, original: str) -> int:
    try:
        return int(name.split(":", 1)[1])
    except ValueError:
        raise RsSearchError(
            f"device {original!r}: unknown; allowed: auto, cpu, cuda, cuda:INDEX"
        ) from None


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
    """Seed of one rank's random stream (dropout, stochastic depth, augmentation) in one epoch:
    reseeding per epoch makes a resumed run draw what the uninterrupted run would have."""
    return (seed * 1_000_003 + rank * 10_007 + epoch) % 2**63


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


# ---------------------------------------------------------------------------------- state I/O


def _rng_state() -> dict[str, Any]:
    """RNG states as tensors and plain values, so that ``weights_only=True`` can load them."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    keys = np.asarray(keys)
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
            "kind": str(kind),
        },
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    npy = state["numpy"]
    np.random.set_state(
        (
            npy["kind"],
            npy["keys"].numpy().astype(np.uint32),
            npy["pos"],
            npy["has_gauss"],
            npy["gauss"],
        )
    )
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _write_metrics(out_dir: Path, payload: dict[str, Any]) -> None:
    text = json.dumps(payload, indent=2) + "\n"
    ckpt.write_atomic(out_dir / METRICS_FILE, lambda fh: fh.write(text.encode()))


@dataclass
class _Run:
    """Everything one run mutates, in one place (model, optimizer, schedule, EMA, sums)."""

    model: nn.Module  # DDP-wrapped under torch.distributed
    ema: WarmupEma | None
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler | None
    curve: list[EpochMetrics]
    epoch: int = 0  # completed epochs
    step: int = 0  # steps done in epoch ``epoch + 1`` (mid-epoch checkpoint)
    partial: torch.Tensor | None = None  # [loss_sum, correct, count, seconds] of that part
    interrupted: bool = False  # should_stop() fired on the epoch's last step: stop after it

    def state(self, candidate: Candidate, data: str, steps_per_epoch: int) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "candidate": candidate.to_dict(),
            "candidate_key": candidate.key(),
            "data": data,
            "steps_per_epoch": steps_per_epoch,
            "epoch": self.epoch,
            "step": self.step,
            "partial": self.partial.cpu() if self.partial is not None else None,
            "model": _unwrap(self.model).state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": _rng_state(),
            "curve": [m.to_dict() for m in self.curve],
        }

    def load(self, state: dict[str, Any]) -> None:
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


def _load_for_resume(
    out_dir: Path,
    candidate: Candidate,
    data: str,
    steps_per_epoch: int,
    ctx: DistContext,
    device: torch.device,
) -> dict[str, Any] | None:
    """Rank 0 picks the newest loadable checkpoint and broadcasts it, so every rank resumes from
    the same one even when only rank 0 can read ``out_dir``."""
    state: dict[str, Any] | None = None
    problem: str | None = None
    if ctx.is_main:
        found = ckpt.load_latest(out_dir)
        if found is not None:
            state = found.state
            if state.get("candidate_key") != candidate.key():
                problem = (
                    f"{found.path} belongs to another candidate (key {state.get('candidate_key')}, "
                    f"this one is {candidate.key()}); use a new output folder"
                )
            elif state.get("data") != data:
                problem = f"{found.path} was trained on data {state.get('data')!r}, not {data!r}"
            elif state.get("steps_per_epoch") != steps_per_epoch:
                problem = (
                    f"{found.path} has {state.get('steps_per_epoch')} steps per epoch, this run "
                    f"{steps_per_epoch}; the data or batch size changed"
                )
            else:
                log.info("resuming from %s (epoch %d done)", found.path, state["epoch"])
        elif ckpt.checkpoint_paths(out_dir):
            log.warning("no loadable checkpoint in %s; starting from epoch 0", out_dir)
    if ctx.distributed:
        box: list[Any] = [(state, problem)]
        dist.broadcast_object_list(box, src=0, device=ctx.collective_device(device))
        state, problem = box[0]
    if problem is not None:
        raise RsSearchError(problem)
    return state


# ------------------------------------------------------------------------------------- epochs


@torch.no_grad()
def evaluate(
    modules: list[nn.Module],
    loader: DataLoader[Any],
    criterion: nn.Module,
    *,
    device: torch.device,
    amp: torch.dtype | None = None,
    ctx: DistContext | None = None,
) -> list[tuple[float, float]]:
    """(loss, top-1 %) of each module in eval mode on the whole val split (sharded over ranks),
    in one pass over the data (the raw weights and the EMA share the decoded images)."""
    ctx = ctx or context()
    for module in modules:
        module.eval()
    sums = torch.zeros(len(modules), 3, dtype=torch.float64, device=device)
    for images, labels in batches(loader):
        images = images.to(device, non_blocking=True, memory_format=torch.channels_last)
        labels = labels.to(device, non_blocking=True)
        for i, module in enumerate(modules):
            with torch.autocast(
                device_type=device.type, dtype=amp or torch.float32, enabled=amp is not None
            ):
                logits = module(images)
            loss = criterion(logits.float(), labels)
            sums[i, 0] += loss.double() * labels.numel()
            sums[i, 1] += (logits.argmax(1) == labels).sum()
            sums[i, 2] += labels.numel()
    total = all_reduce_sum(sums, ctx)
    results = []
    for row in total:
        count = max(row[2].item(), 1.0)
        results.append((row[0].item() / count, 100.0 * row[1].item() / count))
    return results


def train(
    candidate: Candidate,
    *,
    data: str = "digits",
    device: str = "auto",
    out_dir: Path | None = None,
    resume: bool = False,
    stop_at_epoch: int | None = None,
    on_epoch: Callable[[EpochMetrics], bool] | None = None,
    should_stop: Callable[[], bool] | None = None,
    progress: bool = True,
    seed: int = 0,
    num_workers: int | None = None,
    check_every: int | None = None,
) -> TrainResult:
    """Train ``candidate`` on ``data`` and return its per-epoch curve.

    Args:
        data: a data spec (:data:`rs_search.train.data.DATA_SPECS`).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:INDEX``.
        out_dir: where checkpoints (every epoch, last two kept) and ``metrics.json`` go; None
            writes nothing. Without ``resume``, a folder that already holds checkpoints is an
            error (nothing is overwritten).
        resume: continue from the newest loadable checkpoint in ``out_dir`` (a fresh start
            when there is none).
        stop_at_epoch: train only up to this epoch (a rung of the search); the LR schedule still
            spans ``recipe.epochs``, and a later call with ``resume=True`` continues the same run.
        on_epoch: called on rank 0 after each epoch's checkpoint; returning False stops the run
            (``stopped_early``). The decision is broadcast to every rank.
        should_stop: polled every ``check_every`` steps on every rank (e.g. "SIGTERM seen");
            when it returns True on any rank, the run checkpoints mid-epoch and raises
            ``TrialInterrupted``; ``resume=True`` later continues from that step.
        progress: show a progress bar (terminal) or one line per epoch (rank 0, stderr).
        seed: seeds model initialisation, data order, augmentation and dropout.
        num_workers: DataLoader processes per rank (default: see ``loader.default_workers``).
        check_every: steps between NaN/stop checks and progress updates, each of which
            synchronises with the device (default: 1 on CPU, 25 on CUDA).
    """
    from rs_search.models import build_model

    recipe = candidate.recipe
    arch = candidate.arch
    ctx = context()
    dev = resolve_device(device, ctx)
    amp = _amp_dtype(recipe.precision, dev)
    last_epoch = recipe.epochs if stop_at_epoch is None else stop_at_epoch
    if not 1 <= last_epoch <= recipe.epochs:
        raise ValueError(f"stop_at_epoch: {stop_at_epoch} is out of range 1..{recipe.epochs}")
    if recipe.batch_size % ctx.world_size:
        raise SpecError(
            f"recipe.batch_size: {recipe.batch_size} does not split evenly over "
            f"{ctx.world_size} processes"
        )
    per_rank_batch = recipe.batch_size // ctx.world_size
    check_every = check_every or (1 if dev.type == "cpu" else 25)
    if out_dir is not None:
        out_dir = Path(out_dir)
        if not resume and ckpt.checkpoint_paths(out_dir):
            raise RsSearchError(
                f"{out_dir} already holds checkpoints of an earlier run; resume it (--resume) "
                "or choose another output folder (--out)"
            )
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
        torch.backends.cudnn.benchmark = True

    _seed_all(seed)
    source = build_data(data, arch, recipe)
    workers = default_workers(dev, ctx) if num_workers is None else num_workers
    train_loader, sampler, val_loader = build_loaders(
        source, per_rank_batch=per_rank_batch, ctx=ctx, device=dev, workers=workers, seed=seed
    )
    steps_per_epoch = len(train_loader)
    if steps_per_epoch == 0:
        raise DataError(
            f"data {data!r}: {source.train_size} training images are fewer than one batch of "
            f"{recipe.batch_size}; lower recipe.batch_size"
        )

    torch.manual_seed(seed)  # the same initial weights on every rank (DDP broadcasts rank 0's too)
    net = build_model(arch, dropout=recipe.dropout, stochastic_depth=recipe.stochastic_depth)
    with _out_of_memory_is_an_answer(candidate, dev, per_rank_batch):
        net = net.to(dev).to(memory_format=torch.channels_last)
        ema = build_ema(net, recipe)
    optimizer = build_optimizer(net, recipe)
    scheduler = build_scheduler(optimizer, recipe, steps_per_epoch=steps_per_epoch)
    model: nn.Module = net
    if ctx.distributed:
        model = DistributedDataParallel(net, device_ids=[dev.index] if dev.type == "cuda" else None)
    scaler = torch.amp.GradScaler("cuda") if amp == torch.float16 else None
    run = _Run(
        model=model, ema=ema, optimizer=optimizer, scheduler=scheduler, scaler=scaler, curve=[]
    )

    if resume and out_dir is not None:
        state = _load_for_resume(out_dir, candidate, data, steps_per_epoch, ctx, dev)
        if state is not None:
            run.load(state)
            if run.step > 0 and ctx.world_size == 1:  # mid-epoch: continue the saved stream
                _set_rng_state(state["rng"])
            elif run.step > 0:  # rank 0's state is the only one saved: a fresh stream per rank
                torch.manual_seed(_stream_seed(seed, ctx.rank, run.epoch + 1) + run.step)
    criterion = build_criterion(recipe)
    bar = make_progress(progress and ctx.is_main)
    stopped_early = False
    try:
        with _out_of_memory_is_an_answer(candidate, dev, per_rank_batch):
            stopped_early = _epochs(
                run,
                candidate,
                data,
                train_loader,
                sampler,
                val_loader,
                criterion,
                ctx=ctx,
                device=dev,
                amp=amp,
                seed=seed,
                steps_per_epoch=steps_per_epoch,
                check_every=check_every,
                should_stop=should_stop,
                out_dir=out_dir,
                bar=bar,
                last_epoch=last_epoch,
                on_epoch=on_epoch,
                workers=workers,
            )
    finally:
        bar.close()
        _shutdown_loaders(train_loader, val_loader)
    return TrainResult(
        candidate=candidate,
        curve=list(run.curve),
        epochs_done=run.epoch,
        stopped_early=stopped_early,
        out_dir=out_dir,
    )


def _shutdown_loaders(*loaders: DataLoader[Any]) -> None:
    """Stop the persistent loader processes now, however the run ended. They ignore SIGTERM
    (``loader.ignore_sigterm``), so a set left alive until interpreter exit (an exception's
    traceback keeps its iterator alive) made multiprocessing's exit handler, which terminates
    and then joins them, wait forever: a test session hung after its last test this way. A
    search worker, which trains trial after trial in one process, would also pile them up."""
    for loader in loaders:
        iterator = getattr(loader, "_iterator", None)
        shutdown = getattr(iterator, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
        if iterator is not None:
            loader._iterator = None


@contextmanager
def _out_of_memory_is_an_answer(
    candidate: Candidate, device: torch.device, per_rank_batch: int
) -> Iterator[None]:
    """Out-of-memory (CUDA, or the CPU allocator) becomes ``CandidateOutOfMemory``: for a search
    "does not fit" is a result, and the worker goes on (DESIGN.md section 3)."""
    try:
        yield
    except (torch.OutOfMemoryError, RuntimeError) as exc:
        cpu_oom = "DefaultCPUAllocator: can't allocate memory" in str(exc)
        if not isinstance(exc, torch.OutOfMemoryError) and not cpu_oom:
            raise
        if device.type == "cuda":
            torch.cuda.empty_cache()
        arch = candidate.arch
        raise CandidateOutOfMemory(
            f"candidate {arch.label} width {arch.width:g} at {arch.resolution}px does not fit in "
            f"{device} memory with {per_rank_batch} images per device"
        ) from None


def _epochs(
    run: _Run,
    candidate: Candidate,
    data: str,
    train_loader: DataLoader[Any],
    sampler: EpochSampler,
    val_loader: DataLoader[Any],
    criterion: nn.Module,
    *,
    ctx: DistContext,
    device: torch.device,
    amp: torch.dtype | None,
    seed: int,
    steps_per_epoch: int,
    check_every: int,
    should_stop: Callable[[], bool] | None,
    out_dir: Path | None,
    bar: EpochProgress,
    last_epoch: int,
    on_epoch: Callable[[EpochMetrics], bool] | None,
    workers: int,
) -> bool:
    """Epochs until ``last_epoch``: train, checkpoint, metrics.json, ``on_epoch`` (rank 0), agree
    on stopping. Returns whether ``on_epoch`` stopped the run early."""
    recipe = candidate.recipe
    stopped_early = False
    dev = device
    while run.epoch < last_epoch and not stopped_early:
        metrics = _train_epoch(
            run,
            candidate,
            data,
            train_loader,
            sampler,
            val_loader,
            criterion,
            ctx=ctx,
            device=dev,
            amp=amp,
            seed=seed,
            steps_per_epoch=steps_per_epoch,
            check_every=check_every,
            should_stop=should_stop,
            out_dir=out_dir,
            bar=bar,
        )
        run.curve.append(metrics)
        run.epoch += 1
        run.step, run.partial = 0, None
        stop = False
        if ctx.is_main:
            if out_dir is not None:
                ckpt.save_checkpoint(
                    out_dir, run.state(candidate, data, steps_per_epoch), epoch=run.epoch
                )
                _write_metrics(
                    out_dir, _metrics_payload(candidate, data, run, ctx, dev, seed, workers)
                )
            bar.end_epoch(_epoch_line(metrics, recipe.epochs, has_ema=run.ema is not None))
            if on_epoch is not None:
                stop = on_epoch(metrics) is False
        stopped_early = broadcast_flag(stop, ctx, dev)
        if run.interrupted and run.epoch < last_epoch and not stopped_early:
            where = f"checkpoint in {out_dir}" if out_dir is not None else "no output folder"
            raise TrialInterrupted(f"stopped after epoch {run.epoch}; {where}")
    return stopped_early


def _train_epoch(
    run: _Run,
    candidate: Candidate,
    data: str,
    loader: DataLoader[Any],
    sampler: EpochSampler,
    val_loader: DataLoader[Any],
    criterion: nn.Module,
    *,
    ctx: DistContext,
    device: torch.device,
    amp: torch.dtype | None,
    seed: int,
    steps_per_epoch: int,
    check_every: int,
    should_stop: Callable[[], bool] | None,
    out_dir: Path | None,
    bar: EpochProgress,
) -> EpochMetrics:
    """One epoch (or the rest of one after a mid-epoch resume): train, evaluate, return the row."""
    epoch = run.epoch + 1
    first_step = run.step
    sampler.set_epoch(epoch, skip=first_step * loader.batch_size)  # type: ignore[operator]
    if first_step == 0:
        torch.manual_seed(_stream_seed(seed, ctx.rank, epoch))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    # [loss_sum, correct, count] on the device: no host sync per step on CUDA.
    sums = torch.zeros(3, dtype=torch.float64, device=device)
    done_before = torch.zeros(4, dtype=torch.float64)
    if run.partial is not None:
        done_before = run.partial.double().cpu()
        sums += done_before[:3].to(device)
    nonfinite = torch.zeros((), dtype=torch.bool, device=device)
    run.model.train()
    bar.start_epoch(epoch, candidate.recipe.epochs, steps_per_epoch, done=first_step)
    start = time.perf_counter()
    step = first_step
    for images, labels in batches(loader):
        images = images.to(device, non_blocking=True, memory_format=torch.channels_last)
        labels = labels.to(device, non_blocking=True)
        with torch.autocast(
            device_type=device.type, dtype=amp or torch.float32, enabled=amp is not None
        ):
            logits = run.model(images)
        loss = criterion(logits.float(), labels)
        run.optimizer.zero_grad(set_to_none=True)
        if run.scaler is not None:
            run.scaler.scale(loss).backward()
            run.scaler.step(run.optimizer)
            run.scaler.update()
        else:
            loss.backward()
            run.optimizer.step()
        run.scheduler.step()
        if run.ema is not None:
            run.ema.update_parameters(_unwrap(run.model))
        step += 1
        with torch.no_grad():
            nonfinite |= ~torch.isfinite(loss.detach())
            sums += torch.stack(
                [
                    loss.detach().double() * labels.numel(),
                    (logits.argmax(1) == labels).sum().double(),
                    torch.tensor(labels.numel(), dtype=torch.float64, device=device),
                ]
            )
        if step % check_every == 0 or step == steps_per_epoch:
            stop_here = should_stop() if should_stop is not None else False
            diverged, stop_here = any_rank([bool(nonfinite.item()), stop_here], ctx, device)
            if diverged:
                raise TrainingDiverged(
                    f"loss became NaN/inf at epoch {epoch} step {step} "
                    f"(lr {current_lr(run.optimizer):.3g}); lower recipe.lr_per_256 or check the "
                    "data"
                )
            local = sums.cpu()
            seconds = time.perf_counter() - start + float(done_before[3])
            images_done = (local[2].item() - done_before[2].item()) * ctx.world_size
            bar.update(
                step,
                images_per_s=images_done / max(time.perf_counter() - start, 1e-9),
                loss=local[0].item() / max(local[2].item(), 1),
                top1=100 * local[1].item() / max(local[2].item(), 1),
            )
            if stop_here and step == steps_per_epoch:
                run.interrupted = True  # finish this epoch (evaluate, checkpoint), then stop
            elif stop_here:
                run.step = step
                run.partial = torch.cat([local, torch.tensor([seconds], dtype=torch.float64)])
                where = "no checkpoint (no output folder)"
                if ctx.is_main and out_dir is not None:
                    state = run.state(candidate, data, steps_per_epoch)
                    path = ckpt.save_checkpoint(out_dir, state, epoch=run.epoch, step=step)
                    where = f"checkpoint {path}"
                raise TrialInterrupted(
                    f"stopped at epoch {epoch} step {step}/{steps_per_epoch}; {where}"
                )
    train_seconds = time.perf_counter() - start
    lr = current_lr(run.optimizer)

    # Train metrics of the whole epoch over all ranks; the images/s of this (part of the) epoch.
    totals = all_reduce_sum(sums, ctx)
    images_now = totals[2].item() - done_before[2].item() * ctx.world_size
    images_per_s = images_now / max(train_seconds, 1e-9)
    count = max(totals[2].item(), 1.0)

    # Raw weights and EMA in one pass; with rank 0's BN statistics on every rank.
    models = [_unwrap(run.model)] + ([run.ema.module] if run.ema is not None else [])
    for module in models:
        broadcast_buffers(module, ctx, device)
    results = evaluate(models, val_loader, criterion, device=device, amp=amp, ctx=ctx)
    val_loss_raw, val_top1_raw = results[0]
    val_loss, val_top1 = results[-1]
    return EpochMetrics(
        epoch=epoch,
        train_loss=totals[0].item() / count,
        train_top1=100.0 * totals[1].item() / count,
        val_loss=val_loss,
        val_top1=val_top1,
        val_loss_raw=val_loss_raw,
        val_top1_raw=val_top1_raw,
        images_per_s=images_per_s,
        epoch_seconds=time.perf_counter() - start + float(done_before[3]),
        peak_memory_mb=_peak_memory_mb(device),
        lr=lr,
    )


def _epoch_line(m: EpochMetrics, epochs: int, *, has_ema: bool) -> str:
    raw = f" (raw {m.val_top1_raw:.2f}%)" if has_ema else ""
    return (
        f"epoch {m.epoch}/{epochs}  train loss {m.train_loss:.4f} top-1 {m.train_top1:.2f}%  "
        f"val loss {m.val_loss:.4f} top-1 {m.val_top1:.2f}%{raw}  "
        f"{m.images_per_s:.1f} img/s  {m.epoch_seconds:.1f} s  lr {m.lr:.4g}"
    )


def _metrics_payload(
    candidate: Candidate,
    data: str,
    run: _Run,
    ctx: DistContext,
    device: torch.device,
    seed: int,
    workers: int,
) -> dict[str, Any]:
    return {
        "candidate": candidate.to_dict(),
        "candidate_key": candidate.key(),
        "data": data,
        "device": str(device),
        "world_size": ctx.world_size,
        "seed": seed,
        "num_workers": workers,
        "torch": torch.__version__,
        "epochs": candidate.recipe.epochs,
        "epochs_done": run.epoch,
        "finished": run.epoch >= candidate.recipe.epochs,
        "curve": [m.to_dict() for m in run.curve],
    }


def with_epochs(candidate: Candidate, epochs: int) -> Candidate:
    """``candidate`` with ``recipe.epochs`` replaced (``--epochs``); validated by RecipeSpec."""
    return replace(candidate, recipe=replace(candidate.recipe, epochs=epochs))
