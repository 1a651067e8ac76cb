"""Storage URLs: resolution (flag, environment, default) and password masking.

A password must never reach output or logs, so every message that names a URL goes through
``mask_url``; SQLAlchemy's own ``render_as_string(hide_password=True)`` does the masking.
"""

from __future__ import annotations

import os
import re

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from rs_search.errors import StorageError

ENV_STORAGE = "RS_SEARCH_STORAGE"
DEFAULT_STORAGE = "sqlite:///rs-search.db"  # a file in the working directory

_SCHEMES = ("sqlite", "postgresql", "mysql")


def mask_url(url: str | URL) -> str:
    """The URL with its password replaced by ``***``; safe to print.

    Also masks text that is not a parseable URL (``user:secret@host``), because the raw flag value
    may appear in an error message before it was ever parsed.
    """
    if isinstance(url, URL):
        return url.render_as_string(hide_password=True)
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def resolve_storage_url(flag: str | None = None) -> URL:
    """``--storage`` if given, else ``$RS_SEARCH_STORAGE``, else a SQLite file in the cwd."""
    raw = flag or os.environ.get(ENV_STORAGE) or DEFAULT_STORAGE
    try:
        url = make_url(raw)
    except (ArgumentError, ValueError):
        raise StorageError(
            f"storage URL {mask_url(raw)!r} is not a SQLAlchemy URL; "
            "use sqlite:///FILE or postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB"
        ) from None
    if url.get_backend_name() not in _SCHEMES:
        raise StorageError(
            f"storage URL {mask_url(url)!r}: unsupported database {url.get_backend_name()!r}; "
            f"allowed: {', '.join(_SCHEMES)}"
        )
    if url.get_backend_name() == "postgresql" and url.drivername == "postgresql":
        # psycopg (v3) is the driver we ship; plain "postgresql://" would ask for psycopg2.
        url = url.set(drivername="postgresql+psycopg")
    return url
