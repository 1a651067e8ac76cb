"""Storage URLs: resolution (flag, environment, default), checks, and password masking.

A password must never reach output or logs, so every message that names a URL goes through
``mask_url``. A URL that parses is rendered by SQLAlchemy with the password hidden (plus any
``password=`` query value, which libpq also accepts). Text that does not parse as a URL is
*redacted* rather than echoed: in libpq's keyword form the ``password=VALUE``; in
``[scheme://]user:password@host`` everything before the last ``@`` except the user name; and
free text with neither a scheme nor a ``user:`` is not shown at all (it may be a password pasted
alone). A password with an unescaped ``@`` or a missing scheme is exactly the text that does
not parse (issue 10, audit).

Checks made here, before anything connects, so a bad URL is one line and exit status 2:
the database (SQLite or PostgreSQL, see ``SCHEMES``), an unescaped ``@`` in the user information,
and the numeric query options a driver would otherwise turn into a Python exception
(``?timeout=`` for SQLite, ``?connect_timeout=`` for PostgreSQL).
"""

from __future__ import annotations

import math
import os
import re

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from rs_search.errors import StorageError

ENV_STORAGE = "RS_SEARCH_STORAGE"
DEFAULT_STORAGE = "sqlite:///rs-search.db"  # a file in the working directory

# MySQL is not offered: no MySQL driver ships with rs-search, and nothing here is tested on it
# (the claim and migration code relies on PostgreSQL's advisory locks or SQLite's file lock).
SCHEMES = ("sqlite", "postgresql")
EXAMPLES = "sqlite:///FILE or postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB"

# Query keys whose values are secrets (libpq reads ``password`` and ``sslpassword`` from a URI).
_SECRET_KEYS = ("password", "sslpassword")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
_KEYWORD_SECRET = re.compile(
    r"(\b(?:ssl)?password\s*=\s*)('(?:[^'\\]|\\.)*'?|\"[^\"]*\"?|[^\s&;]*)", re.IGNORECASE
)


def mask_url(url: str | URL) -> str:
    """The URL with its password replaced by ``***``; safe to print, whatever the text was."""
    if isinstance(url, URL):
        hidden = {k: "***" for k in _SECRET_KEYS if k in url.query}
        return url.update_query_dict(hidden).render_as_string(hide_password=True)
    parsed = _parse(url)
    return mask_url(parsed) if parsed is not None else _redact(url)


def _parse(raw: str) -> URL | None:
    """``make_url`` that refuses what it would misread: an ``@`` left in the host means the
    password held an unescaped ``@`` and part of it would be shown as the host."""
    try:
        url = make_url(raw)
    except (ArgumentError, ValueError):
        return None
    if "@" in (url.host or ""):
        return None
    return url


def _redact(text: str) -> str:
    """Unparseable text: hide what may be a password instead of guessing where it ends."""
    if _KEYWORD_SECRET.search(text):  # libpq's keyword form: only the password is secret
        return _KEYWORD_SECRET.sub(r"\1***", text)
    scheme = _SCHEME.match(text)
    head, rest = (text[: scheme.end()], text[scheme.end() :]) if scheme else ("", text)
    userinfo, at, host = rest.rpartition("@")
    if at and ":" in userinfo and userinfo.split(":", 1)[0]:
        return f"{head}{userinfo.split(':', 1)[0]}:***@{host}"  # user:password@host
    if scheme:
        return f"{head}***@{host}" if at else text  # no user information: nothing secret
    # Free text with neither a scheme nor user:password@ may be a password pasted alone
    # ("S3CRET@HOST" or "S3CRET:X"): nothing of it is shown.
    return "***"


def resolve_storage_url(flag: str | None = None) -> URL:
    """``--storage`` if given, else ``$RS_SEARCH_STORAGE``, else a SQLite file in the cwd;
    checked (see the module docstring). Raises ``StorageError`` with the password masked."""
    raw = flag or os.environ.get(ENV_STORAGE) or DEFAULT_STORAGE
    url = _parse(raw)
    if url is None:
        hint = (
            "; percent-encode '@' in a user name or password as %40 (':' as %3A, '/' as %2F)"
            if raw.count("@") > 1
            else ""
        )
        raise StorageError(
            f"storage URL {mask_url(raw)!r} is not a SQLAlchemy URL{hint}; use {EXAMPLES}"
        )
    backend = url.get_backend_name()
    if backend == "sqlite" and url.database in (None, "", ":memory:"):
        raise StorageError(
            f"storage URL {mask_url(url)!r} is an in-memory database: the study would vanish "
            "with this process and no worker or later command could see it; give a file, "
            "e.g. sqlite:///rs-search.db"
        )
    if backend not in SCHEMES:
        raise StorageError(
            f"storage URL {mask_url(url)!r}: unsupported database {backend!r}; "
            f"allowed: {', '.join(SCHEMES)} ({EXAMPLES})"
        )
    if backend == "postgresql" and url.drivername == "postgresql":
        # psycopg (v3) is the driver we ship; plain "postgresql://" would ask for psycopg2.
        url = url.set(drivername="postgresql+psycopg")
    _check_driver(url)
    _check_number(url, "timeout" if backend == "sqlite" else "connect_timeout")
    return url


def _check_driver(url: URL) -> None:
    """The driver must be installed and synchronous; otherwise SQLAlchemy would fail later with
    an ImportError deep inside a command."""
    try:
        dialect = url.get_dialect()
        if not getattr(dialect, "is_async", False):
            dialect.import_dbapi()
            return
    except (ArgumentError, ImportError):
        pass
    raise StorageError(
        f"storage URL {mask_url(url)!r}: driver {url.drivername!r} is not available; "
        f"use {EXAMPLES} (psycopg 3 ships with rs-search)"
    )


def _check_number(url: URL, key: str) -> None:
    """A numeric query option: seconds, a finite number >= 0 (whole for libpq)."""
    if key not in url.query:
        return
    raw = url.query[key]
    value = raw if isinstance(raw, str) else ",".join(raw)
    whole = key == "connect_timeout"
    try:
        number = int(value) if whole else float(value)
    except ValueError:
        number = -1
    if not math.isfinite(number) or number < 0:
        kind = "whole seconds" if whole else "seconds"
        raise StorageError(
            f"storage URL {mask_url(url)!r}: ?{key}={value!r} is not a number of {kind} >= 0 "
            f"(e.g. ?{key}=10)"
        )
