"""SQLAlchemy engines with the settings a shared study needs.

PostgreSQL engines get ``pool_pre_ping`` (Optuna sets it only for MySQL) and a bounded pool, so a
dropped connection is replaced instead of failing a trial (DESIGN.md section 5), and a connect
timeout, so an unreachable server (a firewall that drops packets, a host that is down) fails in
seconds instead of after the operating system's TCP timeout (minutes).

Per process: at most ``POOL_SIZE + MAX_OVERFLOW`` connections from our engine, plus as many from
Optuna's RDBStorage (it gets the same ``engine_kwargs``); db/README.md turns that into server
``max_connections``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import SQLAlchemyError

from rs_search.errors import StorageError
from rs_search.storage.url import mask_url, resolve_storage_url

# Project heuristics (not from any paper or library default): a worker holds few concurrent
# sessions (its trial loop, the heartbeat thread, a latency claim), so 4 + 4 connections cover it;
# 10 s to connect is far above a healthy LAN's milliseconds and far below TCP's minutes; a pooled
# connection is recycled after 30 min so a server-side idle timeout never hands us a dead one.
POOL_SIZE = 4
MAX_OVERFLOW = 4
POOL_RECYCLE_S = 1800
CONNECT_TIMEOUT_S = 10
SQLITE_LOCK_TIMEOUT_S = 60


def engine_kwargs(url: URL) -> dict[str, Any]:
    """Keyword arguments for ``create_engine`` (also handed to Optuna's RDBStorage). A timeout
    given in the URL's query (``?timeout=``, ``?connect_timeout=``) wins over ours."""
    if url.get_backend_name() == "sqlite":
        # Several local worker processes share one file: wait for the lock instead of failing.
        return (
            {} if "timeout" in url.query else {"connect_args": {"timeout": SQLITE_LOCK_TIMEOUT_S}}
        )
    kwargs: dict[str, Any] = {
        "pool_pre_ping": True,
        "pool_size": POOL_SIZE,
        "max_overflow": MAX_OVERFLOW,
        "pool_recycle": POOL_RECYCLE_S,
    }
    if "connect_timeout" not in url.query:
        kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S}
    return kwargs


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
