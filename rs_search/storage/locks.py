"""Cross-process locks on a study database, for the read-then-write steps that several machines
may run at once (issue 10, reliability: two ``rs-search start`` of one study at once).

PostgreSQL: a session-level advisory lock (``pg_advisory_lock``) on a connection of its own, held
for the ``with`` block and released by the server if the process dies. Other databases (SQLite,
one machine): no lock is taken; each SQLite statement is serialised by the file's write lock,
and starting one study twice at the same moment on one machine is not guarded.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import func, select
from sqlalchemy.engine import URL

from rs_search.storage.engine import make_engine

__all__ = ["advisory_lock", "lock_id"]


def lock_id(name: str) -> int:
    """The advisory lock number of ``name`` (CRC-32: two names that collide only wait for each
    other, they never share data)."""
    return zlib.crc32(f"rs_search:{name}".encode())


@contextmanager
def advisory_lock(url: URL, name: str) -> Iterator[None]:
    """Hold the database-wide lock ``name`` for the block (a no-op outside PostgreSQL)."""
    if url.get_backend_name() != "postgresql":
        yield
        return
    engine = make_engine(url, check=False)
    try:
        with engine.connect() as conn:
            conn.execute(select(func.pg_advisory_lock(lock_id(name))))
            conn.commit()
            try:
                yield
            finally:
                conn.execute(select(func.pg_advisory_unlock(lock_id(name))))
                conn.commit()
    finally:
        engine.dispose()
