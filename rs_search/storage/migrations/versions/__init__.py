"""Revision files, oldest first by ``down_revision`` (alembic skips this ``__init__``)."""
