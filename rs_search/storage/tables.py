"""Our own tables, beside Optuna's in the same database (DESIGN.md section 3, "Storage").

Every table name starts with ``rs_`` and lives in ``metadata``; ``create_tables`` creates them on
first use and never touches Optuna's schema, so ``optuna.load_study``, optuna-dashboard and
``psql`` keep reading the study unchanged. A change to a table here needs a migration in
``migrations/versions`` (see ``rs_search.storage.schema`` and ``migrations/__init__.py``).

``rs_latency`` (the latency cache, ``rs_search.latency.cache``): one row per architecture key x
hardware-profile key x torch version x device name. The unique constraint over those four
columns is what makes a latency worker's claim atomic: a claim is an INSERT of a row in state
``claimed``, and of two workers inserting the same key the database lets exactly one succeed
(PostgreSQL and SQLite alike). The row becomes ``done`` when the figure is written.
Times are naive UTC.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Engine,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

LATENCY_CLAIMED = "claimed"
LATENCY_DONE = "done"

latency = Table(
    "rs_latency",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    # the key
    Column("arch_key", String(32), nullable=False),
    Column("profile_key", String(32), nullable=False),
    Column("torch_version", String(64), nullable=False),
    Column("device_name", String(255), nullable=False),
    # the claim
    Column("state", String(16), nullable=False),  # claimed | done
    Column("claimed_by", String(255), nullable=True),
    Column("claimed_at", DateTime(timezone=False), nullable=True),
    # the figure (columns for SQL and dashboards; ``result`` is the full LatencyResult.to_dict())
    Column("profile_name", String(128), nullable=False),
    Column("status", String(16), nullable=True),  # ok | oom | error (None while claimed)
    Column("median_ms", Float, nullable=True),
    Column("p90_ms", Float, nullable=True),
    Column("spread", Float, nullable=True),
    Column("peak_memory_mb", Float, nullable=True),
    Column("train_peak_memory_mb", Float, nullable=True),
    Column("stable", Boolean, nullable=True),
    Column("measured_at", DateTime(timezone=False), nullable=True),
    Column("result", JSON, nullable=True),
    Column("error", Text, nullable=True),
    # what was measured, so a row reads on its own
    Column("arch", JSON, nullable=False),
    Column("profile", JSON, nullable=False),
    UniqueConstraint(
        "arch_key", "profile_key", "torch_version", "device_name", name="uq_rs_latency_key"
    ),
    Index("ix_rs_latency_profile", "profile_key", "state"),
)


def create_tables(engine: Engine) -> None:
    """Create our tables on first use, or check their revision (``schema.ensure_tables``)."""
    from rs_search.storage.schema import ensure_tables  # schema imports this module

    ensure_tables(engine)
