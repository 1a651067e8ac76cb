"""torch.distributed helpers for the engine: who am I, reduce metrics, agree on decisions,
end the group when one rank fails alone, leave it within a bounded time.

The engine never creates a process group of its own choosing inside a library call: it joins
the one that exists (``torchrun`` via :func:`init_from_env`, or a search worker's group). Every
collective here is called by every rank in the same order; a rank that skipped one would hang
the others (DESIGN.md section 5), so decisions taken on rank 0 (``on_epoch``) and flags raised on
any rank (NaN, SIGTERM) are combined with one collective before anyone acts on them; the error
that follows travels as :class:`Agreed` and leaves the group intact.

Any other error is one rank's alone (out of memory, unreadable data, a bug): the others are, or
soon will be, waiting in a collective it will never join, until the group's timeout (6 hours in
a search worker's group). :func:`failures_end_the_group` posts the reason in the group's
key-value store and ends this rank's part of the group; gloo peers then fail at once ("connection
closed by peer"), NCCL peers are aborted by a watcher thread that sees the posted reason, and
each peer raises :class:`~rs_search.errors.RankFailed` with that reason and exit status.

On CUDA a group is NCCL with one GPU per rank (:func:`init_from_env`, ``rs_search.devices.resolve``:
rank r on ``cuda:LOCAL_RANK``). Batch normalisation stays per replica (DDP without
``SyncBatchNorm``): each rank normalises its own share of the global batch, as the official
ResNet-RS code does (tensorflow/tpu ``models/official/resnet/resnet_model.py``: plain
``tf.layers.batch_normalization`` per TPU core; only gradients cross replicas). README.md,
"Several GPUs per trial", says why.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from rs_search.devices import parse_device
from rs_search.errors import RankFailed, RsSearchError

__all__ = [
    "Agreed",
    "DistContext",
    "all_reduce_sum",
    "any_rank",
    "broadcast_flag",
    "broadcast_object",
    "context",
    "failures_end_the_group",
    "init_from_env",
    "leave_group",
]

# Keys in the group's store (torchrun's, or rank 0's TCPStore); one group lives once.
_FAILED = "rs_search/failed"
_LEAVING = "rs_search/leaving"
_LEFT = "rs_search/left"


@dataclass(frozen=True, kw_only=True)
class DistContext:
    """This process's place in the group (world size 1 without torch.distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1  # ranks on this machine (torchrun's LOCAL_WORLD_SIZE)
    backend: str | None = None

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def collective_device(self, device: torch.device) -> torch.device:
        """Where collective tensors live: NCCL needs CUDA tensors, gloo takes CPU ones."""
        return device if self.backend == "nccl" else torch.device("cpu")


def context() -> DistContext:
    """The current group, or a single-process context when none is initialized."""
    if not (dist.is_available() and dist.is_initialized()):
        return DistContext()
    return DistContext(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=int(os.environ.get("LOCAL_RANK", dist.get_rank())),
        local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", dist.get_world_size())),
        backend=str(dist.get_backend()),
    )


def init_from_env(device: str = "auto") -> DistContext:
    """Join the group torchrun describes (``WORLD_SIZE``, ``RANK``, ``MASTER_ADDR``...):
    NCCL when training on CUDA, gloo on CPU. A no-op without ``WORLD_SIZE`` > 1."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return context()
    on_cuda = torch.cuda.is_available() and parse_device(device).type != "cpu"
    if on_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend="nccl" if on_cuda else "gloo")
    return context()


def all_reduce_sum(values: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum a float64 tensor over ranks (identity in one process); returns it on the CPU."""
    if not ctx.distributed:
        return values.detach().double().cpu()
    device = ctx.collective_device(values.device)
    buf = values.detach().to(device=device, dtype=torch.float64).clone()
    dist.all_reduce(buf, op=dist.ReduceOp.SUM)
    return buf.cpu()


def any_rank(flags: list[bool], ctx: DistContext, device: torch.device) -> list[bool]:
    """Element-wise OR of boolean flags over ranks (one collective)."""
    if not ctx.distributed:
        return flags
    buf = torch.tensor(
        [1.0 if f else 0.0 for f in flags],
        dtype=torch.float64,
        device=ctx.collective_device(device),
    )
    dist.all_reduce(buf, op=dist.ReduceOp.MAX)
    return [bool(v) for v in buf.cpu().tolist()]


def broadcast_flag(flag: bool, ctx: DistContext, device: torch.device) -> bool:
    """Rank 0's ``flag`` on every rank."""
    if not ctx.distributed:
        return flag
    buf = torch.tensor(
        [1.0 if flag else 0.0], dtype=torch.float64, device=ctx.collective_device(device)
    )
    dist.broadcast(buf, src=0)
    return bool(buf.item())


def broadcast_buffers(module: torch.nn.Module, ctx: DistContext, device: torch.device) -> None:
    """Copy rank 0's buffers (BN running statistics) to every rank before evaluation.

    DDP broadcasts buffers at the start of each forward, but each rank's last training forward
    then updated its own copy; evaluating with rank 0's on all ranks makes the sharded val pass
    one model's result.
    """
    if not ctx.distributed:
        return
    where = ctx.collective_device(device)
    for buf in module.buffers():
        if buf.device == where:
            dist.broadcast(buf, src=0)
        else:
            tmp = buf.detach().to(where)
            dist.broadcast(tmp, src=0)
            buf.copy_(tmp)


def broadcast_object(obj: Any, ctx: DistContext) -> Any:
    """Rank 0's ``obj`` (a checkpoint, a decision) on every rank, sent over the CPU: on the gloo
    group itself, under NCCL over a gloo group made for the occasion. A whole checkpoint as one
    CUDA tensor (``broadcast_object_list`` on NCCL) would need its size again in free GPU memory
    on every rank, next to the model and optimizer it is about to fill."""
    if not ctx.distributed:
        return obj
    side = None if ctx.backend == "gloo" else dist.new_group(backend="gloo")
    assert side is None or isinstance(side, dist.ProcessGroup)  # every rank is a member
    try:
        box = [obj]
        dist.broadcast_object_list(box, src=0, group=side, device=torch.device("cpu"))
        return box[0]
    finally:
        if side is not None:
            dist.destroy_process_group(side)


class Agreed(Exception):  # noqa: N818 - a carrier, not an error of its own
    """Carries ``error``, which every rank raises at the same point after one collective decided
    it (NaN on any rank, a stop, a refused checkpoint): the group stays usable."""

    def __init__(self, error: RsSearchError) -> None:
        super().__init__(str(error))
        self.error = error


def _store() -> Any:
    # torch has no public accessor for the default group's store; this one exists since 1.x.
    return dist.distributed_c10d._get_default_store()


@contextmanager
def failures_end_the_group(ctx: DistContext) -> Iterator[None]:
    """Run the body; an :class:`Agreed` error comes out as the error it carries. Under
    torch.distributed, any other error ends the group on every rank: this rank posts its reason
    and leaves; a rank whose collective broke because another posted raises ``RankFailed``."""
    # Held from the start: after an abort the group, and torch's way to its store, are gone.
    store = _store() if ctx.distributed else None
    watch = _Watch(store) if store is not None and ctx.backend == "nccl" else None
    try:
        yield
    except Agreed as exc:
        raise exc.error.with_traceback(exc.__traceback__) from None
    except Exception as exc:
        if store is None:
            raise
        if watch is not None:
            watch.stop()
        peer = _posted_failure(store, ctx)
        if peer is None:
            _post_failure(store, ctx, exc)
        _end_group(ctx.backend)
        if peer is not None:
            raise peer from None
        raise
    finally:
        if watch is not None:
            watch.stop()


def _post_failure(store: Any, ctx: DistContext, exc: Exception) -> None:
    code = exc.exit_code if isinstance(exc, RsSearchError) else 1
    lines = str(exc).strip().splitlines()
    first = lines[0] if lines else ""
    reason = first if isinstance(exc, RsSearchError) and first else f"{type(exc).__name__}: {first}"
    try:  # the first failure posted stays: later ones are its consequences
        store.compare_set(_FAILED, "", f"{code}\n{ctx.rank}\n{reason[:500]}")
    except Exception:  # noqa: BLE001 - the store is gone too: the peers fail without a reason
        pass


def _posted_failure(store: Any, ctx: DistContext) -> RankFailed | None:
    """Another rank's posted failure, or None (none posted, or this rank's own)."""
    try:
        if not store.check([_FAILED]):
            return None
        code, rank, reason = store.get(_FAILED).decode().split("\n", 2)
    except Exception:  # noqa: BLE001 - no store, no posted reason
        return None
    if int(rank) == ctx.rank:
        return None
    return RankFailed(f"rank {rank} of {ctx.world_size} failed: {reason}", int(code))


def _end_group(backend: str | None) -> None:
    """Leave at once, no barrier: the others are not coming. NCCL communicators are aborted
    (destroying them would wait for the collectives the peers will never finish)."""
    if not dist.is_initialized():
        return
    try:
        if backend == "nccl":
            dist.distributed_c10d._abort_process_group()
        else:
            dist.destroy_process_group()
    except Exception:  # noqa: BLE001 - torn down meanwhile
        pass


class _Watch:
    """NCCL only: a peer in an NCCL collective never notices that a rank left, so a thread waits
    for a posted failure and aborts this rank's communicators; the pending collective then
    raises in the main thread (gloo needs none of this: a closed socket fails it at once)."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self._done = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="rs-search-failure-watch", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        while not self._done.is_set():
            try:
                self._store.wait([_FAILED], timedelta(seconds=1))
            except Exception:  # noqa: BLE001 - the wait timed out (or the store is gone)
                self._done.wait(0.1)  # no busy loop if the store fails at once
                continue
            if not self._done.is_set():
                _end_group("nccl")
            return

    def stop(self) -> None:
        self._done.set()


def leave_group(timeout_s: float = 60.0) -> None:
    """Wait for every rank, then tear the group down. Without the wait, a rank that destroyed its
    gloo group while another was still finishing its last collective was killed by SIGABRT
    ("terminate called without an active exception") in 2 of 8 runs of a 2-rank NaN run on 2
    CPUs (0 of 10 with it). The wait is a counter in the group's store with a deadline, the same
    on gloo and NCCL (``monitored_barrier`` is gloo-only, and NCCL's ``barrier`` waits without
    a bound): a rank that failed alone does not hold the others for more than ``timeout_s``."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    nccl = dist.get_backend() == "nccl"
    try:
        if nccl:
            torch.cuda.synchronize()  # this rank's last collectives are done, not just queued
        store = _store()
        if store.add(_LEAVING, 1) == dist.get_world_size():
            store.set(_LEFT, "1")
        store.wait([_LEFT], timedelta(seconds=timeout_s))
    except Exception:  # noqa: BLE001 - a peer is gone or late: leave without it
        if nccl:
            _end_group("nccl")
            return
    dist.destroy_process_group()
