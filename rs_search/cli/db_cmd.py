"""``rs-search db upgrade`` and ``rs-search db check``: the study database's schema versions.

Thin: parse, call ``rs_search.storage.schema``, print one line per schema history.
"""

from __future__ import annotations

from typing import Annotated

import typer

from rs_search.cli._common import console

HELP_STORAGE = (
    "SQLAlchemy URL of the study database (default: $RS_SEARCH_STORAGE, else "
    "sqlite:///rs-search.db in the working directory). Upgrade as the database's owner role."
)

db_app = typer.Typer(
    name="db",
    help="The study database: check and upgrade the schema of Optuna's tables and ours.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    """Add the ``db`` command group to ``app``."""
    app.add_typer(db_app, name="db")


@db_app.command("upgrade")
def upgrade(
    storage: Annotated[str | None, typer.Option("--storage", help=HELP_STORAGE)] = None,
) -> None:
    """Upgrade Optuna's schema (as ``optuna storage upgrade`` does) and migrate rs-search's own
    tables; creates both on a new database. Safe to run again: a current schema is left as is."""
    from rs_search.storage import schema

    for was, now in schema.upgrade(storage):
        if was == now.current:
            console.print(
                f"{now.name} schema: {now.current} (already current)", soft_wrap=True, markup=False
            )
        else:
            console.print(
                f"{now.name} schema: {was or 'none'} -> {now.current} (upgraded)",
                soft_wrap=True,
                markup=False,
            )


@db_app.command("check")
def check(
    storage: Annotated[str | None, typer.Option("--storage", help=HELP_STORAGE)] = None,
) -> None:
    """Print Optuna's schema version and rs-search's, each current or behind; exit status 1
    when either is not current (run rs-search db upgrade). Changes nothing."""
    from rs_search.storage import schema

    versions = schema.check(storage)
    for version in versions:
        console.print(version.line(), soft_wrap=True, markup=False)
    if any(v.state != "current" for v in versions):
        raise typer.Exit(1)
