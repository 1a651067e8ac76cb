"""Alembic's environment for rs-search's own tables (run by ``rs_search.storage.schema``).

The caller hands over an open connection (``config.attributes["connection"]``), already in a
transaction that holds the schema lock, so the migration joins that transaction. Only ``rs_``
tables are ever compared or touched: Optuna's tables share the database.
"""

from __future__ import annotations

from alembic import context

from rs_search.storage.schema import VERSION_TABLE, is_ours
from rs_search.storage.tables import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=VERSION_TABLE,
    include_name=is_ours,
    render_as_batch=True,  # SQLite alters a table by copying it
)
with context.begin_transaction():
    context.run_migrations()
