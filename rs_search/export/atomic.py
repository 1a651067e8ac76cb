"""A whole output directory written at once: staged in a hidden sibling, then renamed into place.

A failure (an exception, Ctrl-C) removes the staging directory, so ``--out DIR`` either holds
the complete export or is left as it was (DESIGN.md section 3: nothing half-written).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rs_search.errors import RsSearchError

__all__ = ["OutputExists", "staged_directory"]


class OutputExists(RsSearchError):
    """``--out`` names a directory that already holds files (and ``--overwrite`` was not given)."""


def _check_target(out: Path, *, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise OutputExists(f"{out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise OutputExists(f"{out}: directory is not empty; choose a new --out or pass --overwrite")


@contextmanager
def staged_directory(out: Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty staging directory; on success it becomes ``out`` in one rename (an existing
    ``out`` is moved aside first and removed after, with ``overwrite``)."""
    out = Path(out)
    _check_target(out, overwrite=overwrite)
    parent = out.parent if str(out.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=parent))
    except OSError as exc:
        raise RsSearchError(f"{out}: cannot create ({exc.strerror or exc})") from None
    try:
        yield stage
        os.chmod(stage, 0o777 & ~_umask())  # mkdtemp makes 0700
        _check_target(out, overwrite=overwrite)  # someone may have written there meanwhile
        if out.is_dir():
            aside = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=parent))
            aside.rmdir()
            os.replace(out, aside)
            try:
                os.replace(stage, out)
            except OSError:
                os.replace(aside, out)
                raise
            shutil.rmtree(aside, ignore_errors=True)
        else:
            os.replace(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
