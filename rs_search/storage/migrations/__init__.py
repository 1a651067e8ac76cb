"""Alembic migrations of rs-search's own tables (``rs_search.storage.tables``), never Optuna's.

Their revision lives in ``rs_search_alembic_version``; Optuna's ``alembic_version`` is Optuna's.
``rs_search.storage.schema`` runs them (``rs-search db upgrade``); ``env.py`` is what alembic
executes. To change a table: edit ``tables.py`` AND add a revision file under ``versions/``
whose ``down_revision`` is the current head (copy the newest file's header).
``tests/storage/test_schema.py`` fails while the migrations and ``tables.py`` disagree.
"""
