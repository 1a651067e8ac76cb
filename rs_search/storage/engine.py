"""SQLAlchemy engines with the settings a shared study needs.

PostgreSQL engines get ``pool_pre_ping`` (Optuna sets it only for MySQL) and a bounded pool, so a
dropped connection is replaced instead of failing a trial (DESIGN.md section 5).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import SQLAlchemyError

from rs_search.errors import StorageError
from rs_search.storage.url import mask_url, resolve_storage_url


def engine_kwargs(url: URL) -> dict[str, Any]:
    """Keyword arguments for ``create_engine`` (also handed to Optuna's RDBStorage)."""
    if url.get_backend_name() == "sqlite":
        # Several local worker processes share one file: wait for the lock instead of failing.
        return {"connect_args": {"timeout": 60}}
    return {"pool_pre_ping": True, "pool_size": 4, "max_overflow": 4, "pool_recycle": 1800}


def make_engine(storage: str | URL | None = None, *, check: bool = True) -> Engine:
    """An engine for ``storage`` (see ``resolve_storage_url``); with ``check``, connect once so an
    unreachable server is one clear ``StorageError`` with the password masked."""
    url = storage if isinstance(storage, URL) else resolve_storage_url(storage)
    engine = create_engine(url, **engine_kwargs(url))
    if check:
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except SQLAlchemyError as exc:
            engine.dispose()
            reason = (
                str(getattr(exc, "orig", exc)).strip().splitlines()[0]
                if str(exc)
                else type(exc).__name__
            )
            # The driver's message can quote the DSN; mask anything that looks like a password.
            raise StorageError(
                f"cannot reach storage {mask_url(url)}: {_scrub(reason, url)}"
            ) from None
    return engine


def _scrub(message: str, url: URL) -> str:
    if url.password:
        message = message.replace(str(url.password), "***")
    return message
