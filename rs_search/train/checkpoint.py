"""Checkpoints: atomic, the last two kept, loaded safely, a corrupt one skipped.

A checkpoint is one ``torch.save`` file ``ckpt-EEEE-SSSSSS.pt`` (``E`` completed epochs, ``S``
steps into the next epoch; 0 at an epoch boundary) holding only tensors and plain Python values,
so that ``torch.load(weights_only=True)`` reads it: it never runs code from the file.

Writes go to a temporary file in the same folder, are flushed to disk and then renamed over the
final name (``os.replace`` is atomic on POSIX), so a crash or ``kill -9`` mid-write leaves the
previous checkpoint intact and never a half-written one under a checkpoint name.

Also here: the random-number state a mid-epoch checkpoint carries (:func:`rng_state`), and what a
run checks before it resumes one (:class:`RunKey`, :func:`load_for_resume`).
"""

from __future__ import annotations

import logging
import os
import random
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rs_search.errors import RsSearchError
from rs_search.train.distributed import Agreed, DistContext, broadcast_object

__all__ = [
    "FORMAT",
    "KEEP",
    "LoadedCheckpoint",
    "RunKey",
    "checkpoint_paths",
    "load_for_resume",
    "load_latest",
    "refuse_overwrite",
    "rng_state",
    "save_checkpoint",
    "set_rng_state",
    "write_atomic",
]

log = logging.getLogger("rs_search.train")

# 2: the CUDA random state is the run's own device's (``rng.cuda_device``); format 1 kept every
# visible GPU's by position, which a retry on another GPU restored onto the wrong one.
FORMAT = 2
KEEP = 2  # checkpoints kept: the newest, and one to fall back on if the newest is corrupt
_NAME = re.compile(r"^ckpt-(\d{4,})-(\d{6,})\.pt$")


@dataclass(frozen=True)
class LoadedCheckpoint:
    path: Path
    state: dict[str, Any]


def checkpoint_name(epoch: int, step: int = 0) -> str:
    return f"ckpt-{epoch:04d}-{step:06d}.pt"


def is_checkpoint_name(name: str) -> bool:
    """Whether ``name`` is a checkpoint file name this module writes (one path component)."""
    return _NAME.fullmatch(name) is not None


def checkpoint_paths(folder: Path) -> list[Path]:
    """Checkpoints in ``folder``, newest (highest epoch, then step) first."""
    if not folder.is_dir():
        return []
    found: list[tuple[int, int, Path]] = []
    for path in folder.iterdir():
        match = _NAME.match(path.name)
        if match:
            found.append((int(match.group(1)), int(match.group(2)), path))
    return [p for _, _, p in sorted(found, reverse=True)]


def write_atomic(path: Path, write: Any) -> None:
    """Call ``write(file_object)`` on a temp file beside ``path``, fsync, rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


def save_checkpoint(folder: Path, state: dict[str, Any], *, epoch: int, step: int = 0) -> Path:
    """Write ``state`` atomically as the checkpoint of (``epoch``, ``step``); keep the newest
    :data:`KEEP` and delete older ones."""
    path = folder / checkpoint_name(epoch, step)
    write_atomic(path, lambda fh: torch.save(state, fh))
    for old in checkpoint_paths(folder)[KEEP:]:
        old.unlink(missing_ok=True)
    return path


def load_latest(
    folder: Path, *, map_location: str | torch.device = "cpu"
) -> LoadedCheckpoint | None:
    """The newest checkpoint that loads, or None when there is none.

    A file that does not load (truncated, corrupt, not a checkpoint) is reported on the
    ``rs_search.train`` logger and the next older one is tried.
    """
    for path in checkpoint_paths(folder):
        try:
            state = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as exc:  # torch raises RuntimeError, pickle errors, EOFError, ...
            reason = str(exc).strip().split("\n")[0][:160] or type(exc).__name__
            log.warning("checkpoint %s is unreadable (%s); trying the previous one", path, reason)
            continue
        if not isinstance(state, dict) or "epoch" not in state:
            log.warning(
                "checkpoint %s is not an rs-search checkpoint; trying the previous one", path
            )
            continue
        return LoadedCheckpoint(path=path, state=state)
    return None


# ------------------------------------------------------------------------------- random state


def rng_state(device: torch.device) -> dict[str, Any]:
    """Python, NumPy, torch CPU and (on CUDA) ``device``'s own generator states, as tensors and
    plain values so that ``weights_only=True`` loads them. Only the run's device: the other GPUs
    of the machine belong to other workers, and a resumed run may land on another index."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": {
            "keys": torch.from_numpy(np.asarray(keys).astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
            "kind": str(kind),
        },
    }
    if device.type == "cuda":
        state["cuda_device"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    """Restore :func:`rng_state`'s states; the CUDA one onto ``device`` (this run's), whichever
    index saved it. A format-1 list of every GPU's state is not used: which entry was the run's
    is unknown."""
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    npy = state["numpy"]
    keys = npy["keys"].numpy().astype(np.uint32)
    np.random.set_state((npy["kind"], keys, npy["pos"], npy["has_gauss"], npy["gauss"]))
    if device.type == "cuda" and state.get("cuda_device") is not None:
        torch.cuda.set_rng_state(state["cuda_device"], device)


# ------------------------------------------------------------------------------------ resuming


@dataclass(frozen=True, kw_only=True)
class RunKey:
    """What a checkpoint must match for this run to continue it."""

    candidate_key: str
    data: str
    steps_per_epoch: int

    def stamp(self) -> dict[str, Any]:
        """The fields a checkpoint of this run carries."""
        return {
            "format": FORMAT,
            "candidate_key": self.candidate_key,
            "data": self.data,
            "steps_per_epoch": self.steps_per_epoch,
        }

    def problem(self, state: dict[str, Any], path: Path) -> str | None:
        """Why ``state`` (read from ``path``) cannot be resumed by this run, or None."""
        if state.get("candidate_key") != self.candidate_key:
            return (
                f"{path} belongs to another candidate (key {state.get('candidate_key')}, "
                f"this one is {self.candidate_key}); use a new output folder"
            )
        if state.get("data") != self.data:
            return f"{path} was trained on data {state.get('data')!r}, not {self.data!r}"
        if state.get("steps_per_epoch") != self.steps_per_epoch:
            return (
                f"{path} has {state.get('steps_per_epoch')} steps per epoch, this run "
                f"{self.steps_per_epoch}; the data or batch size changed"
            )
        return None


def refuse_overwrite(folder: Path, ctx: DistContext) -> None:
    """Without ``--resume``, a folder that holds checkpoints is refused (nothing is overwritten);
    rank 0 looks (only it writes there) and every rank raises the same error."""
    found = bool(checkpoint_paths(folder)) if ctx.is_main else False
    if broadcast_object(found, ctx):
        raise Agreed(
            RsSearchError(
                f"{folder} already holds checkpoints of an earlier run; resume it (--resume) "
                "or choose another output folder (--out)"
            )
        )


def load_for_resume(folder: Path, key: RunKey, ctx: DistContext) -> dict[str, Any] | None:
    """The newest loadable checkpoint in ``folder`` that ``key`` may continue, on every rank;
    None when there is none. Rank 0 reads and checks it and broadcasts it over the CPU, so every
    rank resumes from the same one even when only rank 0 can read ``folder``. A checkpoint of
    another run is refused on every rank alike."""
    state: dict[str, Any] | None = None
    problem: str | None = None
    if ctx.is_main:
        found = load_latest(folder)
        if found is not None:
            state, problem = found.state, key.problem(found.state, found.path)
            if problem is None:
                log.info("resuming from %s (epoch %d done)", found.path, state["epoch"])
        elif checkpoint_paths(folder):
            log.warning("no loadable checkpoint in %s; starting from epoch 0", folder)
    state, problem = broadcast_object((None if problem else state, problem), ctx)
    if problem is not None:
        raise Agreed(RsSearchError(problem))
    return state
