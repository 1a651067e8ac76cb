"""Create and drop PostgreSQL databases: fresh databases for tests and for new shared setups.

``CREATE DATABASE`` cannot run inside a transaction, so these use an AUTOCOMMIT connection to the
server's maintenance database named in the URL.
"""

from __future__ import annotations

import re

from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.exc import SQLAlchemyError

from rs_search.errors import StorageError
from rs_search.storage.engine import make_engine
from rs_search.storage.url import mask_url, resolve_storage_url

_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def _admin(url: str | URL) -> URL:
    parsed = url if isinstance(url, URL) else resolve_storage_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise StorageError(f"{mask_url(parsed)}: creating databases needs PostgreSQL")
    return parsed


def create_database(url: str | URL, name: str) -> URL:
    """Create database ``name`` on the server of ``url``; returns the URL pointing at it."""
    if not _NAME.match(name):
        raise StorageError(f"database name {name!r}: use lower-case letters, digits and _ (max 63)")
    admin = _admin(url)
    engine = make_engine(admin)
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except SQLAlchemyError as exc:
        raise StorageError(
            f"cannot create database {name!r} on {mask_url(admin)}: "
            f"{str(getattr(exc, 'orig', exc)).strip().splitlines()[0]}"
        ) from None
    finally:
        engine.dispose()
    return admin.set(database=name)


def drop_database(url: str | URL, name: str) -> None:
    """Drop database ``name`` (closing other sessions on it first); absent is not an error."""
    if not _NAME.match(name):
        raise StorageError(f"database name {name!r}: use lower-case letters, digits and _ (max 63)")
    admin = _admin(url)
    engine = make_engine(admin)
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    except SQLAlchemyError as exc:
        raise StorageError(
            f"cannot drop database {name!r} on {mask_url(admin)}: "
            f"{str(getattr(exc, 'orig', exc)).strip().splitlines()[0]}"
        ) from None
    finally:
        engine.dispose()
