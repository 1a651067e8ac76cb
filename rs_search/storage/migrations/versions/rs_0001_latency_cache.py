"""rs_latency: the latency cache (the schema rs-search created with create_all before migrations).

A database made by an older rs-search has this table and no revision; it is stamped with this
revision as its baseline (``rs_search.storage.schema``).

Revision ID: rs_0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "rs_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rs_latency",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("arch_key", sa.String(32), nullable=False),
        sa.Column("profile_key", sa.String(32), nullable=False),
        sa.Column("torch_version", sa.String(64), nullable=False),
        sa.Column("device_name", sa.String(255), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("claimed_by", sa.String(255), nullable=True),
        sa.Column("claimed_at", sa.DateTime(timezone=False), nullable=True),
        sa.Column("profile_name", sa.String(128), nullable=False),
        sa.Column("status", sa.String(16), nullable=True),
        sa.Column("median_ms", sa.Float, nullable=True),
        sa.Column("p90_ms", sa.Float, nullable=True),
        sa.Column("spread", sa.Float, nullable=True),
        sa.Column("peak_memory_mb", sa.Float, nullable=True),
        sa.Column("train_peak_memory_mb", sa.Float, nullable=True),
        sa.Column("stable", sa.Boolean, nullable=True),
        sa.Column("measured_at", sa.DateTime(timezone=False), nullable=True),
        sa.Column("result", sa.JSON, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("arch", sa.JSON, nullable=False),
        sa.Column("profile", sa.JSON, nullable=False),
        sa.UniqueConstraint(
            "arch_key", "profile_key", "torch_version", "device_name", name="uq_rs_latency_key"
        ),
    )
    op.create_index("ix_rs_latency_profile", "rs_latency", ["profile_key", "state"])


def downgrade() -> None:
    op.drop_index("ix_rs_latency_profile", table_name="rs_latency")
    op.drop_table("rs_latency")
