"""Checkpoints: atomic, the last two kept, loaded safely, a corrupt one skipped.

A checkpoint is one ``torch.save`` file ``ckpt-EEEE-SSSSSS.pt`` (``E`` completed epochs, ``S``
steps into the next epoch; 0 at an epoch boundary) holding only tensors and plain Python values,
so that ``torch.load(weights_only=True)`` reads it: it never runs code from the file.

Writes go to a temporary file in the same folder, are flushed to disk and then renamed over the
final name (``os.replace`` is atomic on POSIX), so a crash or ``kill -9`` mid-write leaves the
previous checkpoint intact and never a half-written one under a checkpoint name.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "KEEP",
    "LoadedCheckpoint",
    "checkpoint_paths",
    "load_latest",
    "save_checkpoint",
    "write_atomic",
]

log = logging.getLogger("rs_search.train")

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
