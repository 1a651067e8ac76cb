"""Helpers shared by the CLI modules: one console per stream, tables, atomic file writes."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

from rich.console import Console
from rich.table import Table
from rich.text import Text

from rs_search.errors import RsSearchError

#: ``--storage``'s help, the same for every command that opens a study.
HELP_STORAGE = (
    "SQLAlchemy URL of the study database (default: $RS_SEARCH_STORAGE, else "
    "sqlite:///rs-search.db in the working directory)."
)

# Text from a study, a file or a flag reaches these consoles: ``[...]`` in it must not be read as
# rich markup (``rich.markup.escape`` it in a line that uses markup, or print with
# ``markup=False``), and ``:name:`` must not become an emoji (issue 10, audit).
console = Console(highlight=False, emoji=False)
err_console = Console(stderr=True, highlight=False, emoji=False)


def print_table(
    title: str | None,
    columns: Sequence[str],
    rows: Iterable[Sequence[object]],
    *,
    right: Sequence[str] = (),
) -> None:
    """Print a rich table; ``right`` names the columns to right-align (numbers). The title and
    the cells are shown as they are (never read as markup: they hold names from the study)."""
    table = Table(title=Text(title) if title else None, title_justify="left", show_lines=False)
    cells = [["" if cell is None else str(cell) for cell in row] for row in rows]
    # Compact columns (headers wrap at spaces) when they fit; otherwise rich folds the widest.
    widths = [
        max([len(word) for word in name.split()] + [len(row[i]) for row in cells if i < len(row)])
        for i, name in enumerate(columns)
    ]
    fits = sum(widths) + 3 * len(widths) + 1 <= console.width
    for name, width in zip(columns, widths, strict=True):
        justify: Literal["left", "right"] = "right" if name in right else "left"
        table.add_column(name, justify=justify, width=width if fits else None, overflow="fold")
    for row in cells:
        table.add_row(*(Text(cell) for cell in row))
    console.print(table)


def write_atomic(path: Path, text: str, *, make_parent: bool = False) -> None:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file in the same folder and a
    rename, so a reader never sees half a file and a failed write leaves nothing behind; any
    failure is one ``RsSearchError`` line. ``make_parent``: create a missing parent folder."""
    folder = path.parent if str(path.parent) else Path(".")
    try:
        if make_parent:
            folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise RsSearchError(f"{path}: cannot write ({exc.strerror or exc})") from None
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise RsSearchError(f"{path}: cannot write ({exc.strerror or exc})") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fmt_millions(count: int) -> str:
    return f"{count / 1e6:.2f}"


def fmt_giga(count: int) -> str:
    return f"{count / 1e9:.3g}"


def fmt_flops(count: int) -> str:
    """``1.02 T`` / ``511 G`` / ``113 M``: three significant digits in the unit that keeps them
    readable (the switch sits where rounding would print ``1e+03``)."""
    if count >= 999.5e9:
        return f"{count / 1e12:.3g} T"
    if count >= 999.5e6:
        return f"{count / 1e9:.3g} G"
    return f"{count / 1e6:.3g} M"
