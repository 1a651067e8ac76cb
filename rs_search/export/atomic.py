"""A whole output directory written at once: staged in a hidden sibling, then renamed into place.

A failure (an exception, Ctrl-C) removes the staging directory, so ``--out DIR`` either holds
the complete export or is left as it was (DESIGN.md section 3: nothing half-written).

Replacing a folder that holds files (``--overwrite``) deletes them, so it is allowed only where
the caller recognises the folder as one it wrote before (``replaceable``): before this rule
``export --overwrite`` deleted whatever an unrelated folder held, and ``--out .`` failed with a
Python exception (issue 10, audit). The working folder and the folders above it are never
replaced.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from rs_search.errors import RsSearchError

__all__ = ["OutputExists", "staged_directory"]


class OutputExists(RsSearchError):
    """``--out`` names a directory that already holds files (and ``--overwrite`` was not given)."""


# Why a folder may not be replaced (None: it may): the caller's test of "I wrote this before".
Replaceable = Callable[[Path], str | None]


def _never(folder: Path) -> str | None:
    return "rs-search cannot tell what it holds"


def _check_target(out: Path, *, overwrite: bool, replaceable: Replaceable) -> None:
    if out.exists() and not out.is_dir():
        raise OutputExists(f"{out}: exists and is not a directory")
    here = Path.cwd().resolve()
    target = out.resolve()
    if target == here or target in here.parents:
        raise OutputExists(
            f"{out}: is the working folder or a folder above it; choose a new folder for --out"
        )
    if not out.is_dir():
        return
    try:
        empty = not any(out.iterdir())
    except OSError as exc:
        raise OutputExists(f"{out}: cannot read ({exc.strerror or exc})") from None
    if empty:
        return
    if not overwrite:
        raise OutputExists(f"{out}: directory is not empty; choose a new --out or pass --overwrite")
    why = replaceable(out)
    if why is not None:
        raise OutputExists(
            f"{out}: --overwrite replaces only a previous export, and this folder is not one "
            f"({why}); choose a new --out"
        )


@contextmanager
def staged_directory(
    out: Path, *, overwrite: bool = False, replaceable: Replaceable = _never
) -> Iterator[Path]:
    """Yield an empty staging directory; on success it becomes ``out`` in one rename. With
    ``overwrite`` a non-empty ``out`` that ``replaceable`` accepts is moved aside first and
    removed after; any other non-empty ``out`` is refused before anything is written."""
    out = Path(out)
    _check_target(out, overwrite=overwrite, replaceable=replaceable)
    parent = out.parent if str(out.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=parent))
    except OSError as exc:
        raise RsSearchError(f"{out}: cannot create ({exc.strerror or exc})") from None
    try:
        yield stage
        os.chmod(stage, 0o777 & ~_umask())  # mkdtemp makes 0700
        # someone may have written there meanwhile
        _check_target(out, overwrite=overwrite, replaceable=replaceable)
        try:
            _move_into_place(stage, out, parent)
        except OSError as exc:  # a mount point, a folder in use, a full disk: one line
            raise RsSearchError(f"{out}: cannot replace ({exc.strerror or exc})") from None
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


def _move_into_place(stage: Path, out: Path, parent: Path) -> None:
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


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
