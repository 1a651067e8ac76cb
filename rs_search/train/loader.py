"""DataLoaders for the engine: shuffled, sharded over ranks, augmentation seeded per image.

Each training image's augmentation (crop, flip, RandAugment) is drawn from a generator seeded
by (run seed, epoch, image index), carried from the sampler to the dataset with the index. So
an image is augmented the same way whichever rank or loader process reads it: a DDP group
trains on exactly the batches and augmentations of a single process with the same global batch
(the shuffle is one permutation that ``DistributedSampler`` deals out, so rank ``r`` of ``w``
holds positions ``r, r + w, ...`` of every global batch), and a resumed run sees what the
uninterrupted one would have.

A fixed subset of the training split (:func:`train_eval_indices`) is read after every epoch
through a loader of its own (:func:`build_subset_loader`) in two views: augmented as in
training, with the same augmentation every epoch (the batch-norm statistics are recomputed on
it, :mod:`rs_search.train.batchnorm`), and preprocessed like validation (the train accuracy
measured like validation).
"""

from __future__ import annotations

import itertools
import os
import signal
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from rs_search.errors import DataError
from rs_search.train.data import DataSource
from rs_search.train.distributed import DistContext

__all__ = [
    "TRAIN_EVAL_MAX_IMAGES",
    "EpochSampler",
    "SeededItems",
    "ShardSampler",
    "SubsetPasses",
    "TwoViews",
    "build_subset_loader",
    "batches",
    "available_cpus",
    "build_loaders",
    "default_workers",
    "ignore_sigterm",
    "item_seed",
    "train_eval_indices",
]

#: Project heuristic (neither the paper nor the official code measures train accuracy this way):
#: at most this many training images in the fixed subset, which holds as many as the validation
#: split (the same sampling noise as val top-1) up to this cap: 5,000 ImageNet images put the
#: standard error of an 80% top-1 near 0.6 points, and reading them twice per epoch (statistics,
#: then accuracy) costs a fraction of a percent of an ImageNet epoch (benchmarks/RESULTS.md,
#: "Early-epoch figures and batch-norm statistics").
TRAIN_EVAL_MAX_IMAGES = 5000
#: The subset is drawn with this seed, not the run's, so every candidate of a study is measured
#: on the same training images (as ``digits_split``'s seed gives them the same val images).
_SUBSET_SEED = 0


def item_seed(seed: int, epoch: int, index: int) -> int:
    """Seed of one image's augmentation in one epoch."""
    return ((seed * 1_000_003 + epoch) * 10_000_019 + index) % 2**63


class EpochSampler(Sampler[tuple[int, int]]):
    """``DistributedSampler`` (also for one process, so every world size shuffles alike)
    yielding ``(index, augmentation seed)``; an epoch can start after ``skip`` items to resume
    a checkpoint taken mid-epoch."""

    def __init__(self, dataset: Dataset[Any], ctx: DistContext, *, seed: int) -> None:
        self.base: DistributedSampler[Any] = DistributedSampler(
            dataset,
            num_replicas=ctx.world_size,
            rank=ctx.rank,
            shuffle=True,
            seed=seed,
            drop_last=False,
        )
        self.seed = seed
        self.epoch = 0
        self.skip = 0

    def set_epoch(self, epoch: int, *, skip: int = 0) -> None:
        self.base.set_epoch(epoch)
        self.epoch = epoch
        self.skip = skip

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for index in itertools.islice(iter(self.base), self.skip, None):
            yield index, item_seed(self.seed, self.epoch, index)

    def __len__(self) -> int:
        return len(self.base) - self.skip


class SeededItems(Dataset[tuple[torch.Tensor, int]]):
    """``dataset[(index, seed)]``: the item with torch's CPU generator seeded for its transforms
    (torchvision v2 draws from it); the caller's generator state is restored afterwards.

    Only the CPU generator is touched: ``torch.manual_seed`` would also queue a lazy CUDA/XPU
    seeding call with a formatted stack per image when CUDA is not initialised (measured: 8 ms
    per image, and a queue that grows without bound).
    """

    def __init__(self, dataset: Dataset[tuple[torch.Tensor, int]]) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int]:  # type: ignore[override]
        index, seed = key
        generator = torch.default_generator
        state = generator.get_state()
        try:
            generator.manual_seed(seed)
            return self.dataset[index]
        finally:
            generator.set_state(state)


class ShardSampler(Sampler[int]):
    """Rank ``r`` of ``w`` evaluates images ``r, r + w, ...``: every image exactly once (unlike
    DistributedSampler, which pads with repeats), so the all-reduced top-1 is exact."""

    def __init__(self, size: int, ctx: DistContext) -> None:
        self.indices = range(ctx.rank, size, ctx.world_size)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def train_eval_indices(train_size: int, val_size: int) -> list[int]:
    """The fixed training subset: ``min(train_size, val_size, TRAIN_EVAL_MAX_IMAGES)`` indices
    drawn without replacement by a generator of fixed seed, sorted (neighbouring files read
    together). The same list every epoch, after a resume and for every candidate."""
    size = min(train_size, val_size, TRAIN_EVAL_MAX_IMAGES)
    order = torch.randperm(train_size, generator=torch.Generator().manual_seed(_SUBSET_SEED))
    return sorted(order[:size].tolist())


class TwoViews(Dataset[tuple[torch.Tensor, int]]):
    """Training images by key ``(index, seed)``: preprocessed like validation (``train_eval``)
    when ``seed`` is None, else augmented as in training with the generator seeded by ``seed``
    (:class:`SeededItems`). One dataset, so one set of loader processes serves both views."""

    def __init__(
        self,
        train: Dataset[tuple[torch.Tensor, int]],
        train_eval: Dataset[tuple[torch.Tensor, int]],
    ) -> None:
        self.augmented = SeededItems(train)
        self.plain = train_eval

    def __len__(self) -> int:
        return len(self.plain)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int | None]) -> tuple[torch.Tensor, int]:  # type: ignore[override]
        index, seed = key
        if seed is None:
            return self.plain[index]
        return self.augmented[(index, seed)]


class SubsetPasses(Sampler[tuple[int, int | None]]):
    """This rank's share of the fixed subset (``indices[rank::world_size]``, every image once
    over the group, as :class:`ShardSampler` deals the val split) as :class:`TwoViews` keys.

    ``augmented`` picks the view of the next pass (the loader makes a new iterator of its
    sampler at every pass, persistent processes included). An augmented image's seed depends on
    the run seed and the image only (``item_seed`` of epoch 0, which is never trained), so a
    pass reads the same augmented images every epoch and after a resume.
    """

    def __init__(self, indices: Sequence[int], ctx: DistContext, *, seed: int) -> None:
        self.indices = list(indices)[ctx.rank :: ctx.world_size]
        self.smallest_share = len(indices) // ctx.world_size  # the same on every rank
        self.seed = seed
        self.augmented = False

    def __iter__(self) -> Iterator[tuple[int, int | None]]:
        for index in self.indices:
            yield index, item_seed(self.seed, 0, index) if self.augmented else None

    def __len__(self) -> int:
        return len(self.indices)


def ignore_sigterm(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: loader processes ignore SIGTERM. A scheduler (Slurm,
    ``kill`` of a process group) signals every process; the training process turns SIGTERM
    into a checkpoint, which a loader process that died of it first would turn into a crash.
    Loader processes still end with their parent (DataLoader's own shutdown and watchdog)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, which a container or ``taskset`` sets)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def default_workers(device: torch.device, *, processes: int = 1, cpus: int | None = None) -> int:
    """Loader processes for one training process, when ``--num-workers`` is not given.

    ``processes``: training processes sharing this machine's CPUs (the ranks of a local torchrun
    group times the search workers started side by side); each gets an equal share of ``cpus``
    (default :func:`available_cpus`), so 8 GPU workers on 16 cores start 2 loader processes
    each, not 8 (issue 14). On CUDA up to 8 per process; on CPU one core of the share is left to
    the model (decoding and RandAugment run beside the training threads), none when cores are
    scarce. Project heuristics, like timm's and torchvision's reference scripts' defaults.
    """
    share = max(1, (cpus if cpus is not None else available_cpus()) // max(1, processes))
    if device.type == "cuda":
        return min(8, share)
    return max(0, min(4, share - 1))


def _loader_settings(device: torch.device, workers: int, seed: int) -> dict[str, Any]:
    # Each loader draws its iterators' base seed from a generator of its own: from torch's
    # global one, creating an iterator shifted the dropout stream, so a run resumed mid-epoch
    # (its iterator made anew) drew other dropout masks than the uninterrupted run. The base
    # seed itself changes nothing: every image's augmentation is seeded by SeededItems.
    return {
        "num_workers": workers,
        "pin_memory": device.type == "cuda",
        "persistent_workers": workers > 0,
        "worker_init_fn": ignore_sigterm if workers > 0 else None,
        "generator": torch.Generator().manual_seed(seed),
    }


def build_loaders(
    source: DataSource,
    *,
    per_rank_batch: int,
    ctx: DistContext,
    device: torch.device,
    workers: int,
    seed: int,
) -> tuple[DataLoader[Any], EpochSampler, DataLoader[Any]]:
    """(train loader, its sampler, val loader). Train drops the last partial batch (a batch of
    one would break BN; TF drops the remainder too); val is sharded without repeats."""
    sampler = EpochSampler(source.train, ctx, seed=seed)
    train_loader = DataLoader(
        SeededItems(source.train),
        batch_size=per_rank_batch,
        sampler=sampler,
        drop_last=True,
        **_loader_settings(device, workers, seed),
    )
    val_loader = DataLoader(
        source.val,
        batch_size=per_rank_batch * 2,
        sampler=ShardSampler(source.val_size, ctx),
        **_loader_settings(device, workers, seed),
    )
    return train_loader, sampler, val_loader


def build_subset_loader(
    source: DataSource,
    *,
    batch_size: int,
    ctx: DistContext,
    device: torch.device,
    workers: int,
    seed: int,
) -> tuple[DataLoader[Any], SubsetPasses]:
    """(loader, its sampler) of the fixed training subset (:func:`train_eval_indices`) in both
    views (:class:`SubsetPasses`). ``batch_size`` is the training forward pass's (the per-device
    batch, or the micro-batch): batch-norm statistics are recomputed over batches of that size,
    as training normalised them. Its loader processes persist between epochs, like the val
    loader's: one more set of ``workers`` per training process."""
    indices = train_eval_indices(source.train_size, source.val_size)
    passes = SubsetPasses(indices, ctx, seed=seed)
    loader = DataLoader(
        TwoViews(source.train, source.train_eval),
        batch_size=batch_size,
        sampler=passes,
        **_loader_settings(device, workers, seed),
    )
    return loader, passes


def batches(loader: DataLoader[Any]) -> Iterator[Any]:
    """Iterate ``loader``; a DataError from a loader process (which DataLoader re-raises with
    the worker's traceback in its message) comes out as its original one line."""
    iterator = iter(loader)
    while True:
        try:
            batch = next(iterator)
        except StopIteration:
            return
        except DataError as exc:
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            last = lines[-1] if lines else "unreadable data"
            for prefix in ("rs_search.errors.DataError: ", "DataError: "):
                last = last.removeprefix(prefix)
            raise DataError(last) from None
        yield batch
