"""PNG export of the report's figures through kaleido.

kaleido 1.x renders in a Chrome or Chromium it does not ship (DESIGN.md section 5); it looks for
one on ``PATH`` or at ``$BROWSER_PATH``. We look first, so that a machine without one gets one
line saying how to install it instead of kaleido's advice to download a browser build.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rs_search.errors import RsSearchError

if TYPE_CHECKING:
    from rs_search.reports.report import Section

BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
INSTALL_HINT = (
    "PNG export needs Chromium: install it (Debian/Ubuntu: apt-get install chromium) "
    "or point BROWSER_PATH at a Chrome/Chromium binary"
)


class ReportError(RsSearchError):
    """A report or one of its images cannot be written."""


def find_browser() -> str | None:
    """``$BROWSER_PATH`` when it names an executable, else the first Chromium/Chrome on PATH."""
    explicit = os.environ.get("BROWSER_PATH")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    for name in BROWSER_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def write_pngs(sections: Sequence[Section], directory: Path, *, width: int = 1200) -> list[Path]:
    """One ``<key>.png`` per figure in ``directory``; one Chromium session renders them all."""
    browser = find_browser()
    if browser is None:
        raise ReportError(INSTALL_HINT)
    import plotly.io as pio

    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / f"{s.key}.png" for s in sections]
    previous = os.environ.get("BROWSER_PATH")
    os.environ["BROWSER_PATH"] = browser  # kaleido/choreographer read it to find the browser
    try:
        pio.write_images(
            [s.figure for s in sections],
            paths,
            format="png",
            width=width,
            height=[int(s.figure.layout.height or 500) for s in sections],
        )
    except Exception as exc:  # kaleido raises its own types (ChromeNotFoundError, timeouts)
        raise ReportError(
            f"PNG export through kaleido failed ({type(exc).__name__}: {exc}); browser: {browser}"
        ) from exc
    finally:
        if previous is None:
            os.environ.pop("BROWSER_PATH", None)
        else:
            os.environ["BROWSER_PATH"] = previous
    return paths
