"""torch.distributed helpers for the engine: who am I, reduce metrics, agree on decisions.

The engine never creates a process group of its own choosing inside a library call: it joins
the one that exists (``torchrun`` via :func:`init_from_env`, or a search worker's group). Every
collective here is called by every rank in the same order; a rank that skipped one would hang
the others (DESIGN.md section 5), so decisions taken on rank 0 (``on_epoch``) and flags raised on
any rank (NaN, SIGTERM) are combined with one collective before anyone acts on them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

__all__ = [
    "DistContext",
    "all_reduce_sum",
    "any_rank",
    "broadcast_flag",
    "context",
    "init_from_env",
]


@dataclass(frozen=True, kw_only=True)
class DistContext:
    """This process's place in the group (world size 1 without torch.distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
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
        backend=str(dist.get_backend()),
    )


def init_from_env(device: str = "auto") -> DistContext:
    """Join the group torchrun describes (``WORLD_SIZE``, ``RANK``, ``MASTER_ADDR``...):
    NCCL when training on CUDA, gloo on CPU. A no-op without ``WORLD_SIZE`` > 1."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return context()
    on_cuda = torch.cuda.is_available() and device != "cpu"
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


def leave_group() -> None:
    """Wait for every rank, then tear the group down. Without the wait, a rank that destroyed its
    gloo group while another was still finishing its last collective was killed by SIGABRT
    ("terminate called without an active exception") in 2 of 8 runs of a 2-rank NaN run on 2
    CPUs (0 of 10 with it). The wait is bounded: a rank that failed alone does not hold the
    others for long."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    try:
        if dist.get_backend() == "gloo":
            dist.monitored_barrier(timeout=timedelta(seconds=60))
        else:
            dist.barrier()
    except Exception:  # noqa: BLE001 - a peer is gone: nothing is left to wait for
        pass
    dist.destroy_process_group()
