"""Entry point: builds the typer app from the command-group modules and maps errors to exits.

Every ``RsSearchError`` becomes one line on stderr and its ``exit_code`` (2 for bad input), and so
does every usage error (a missing or unknown option or command, a value of the wrong type); the
traceback is shown only with ``--debug``. Each command-group module exposes
``register(app)`` and imports its heavy dependencies (torch, optuna) inside the command bodies so
that ``rs-search --help`` stays fast.
"""

from __future__ import annotations

import sys
from typing import Annotated, NoReturn

import typer

from rs_search import __version__
from rs_search.cli import (
    bench_cmd,
    db_cmd,
    export_cmd,
    latency_cmd,
    models_cmd,
    report_cmd,
    search_cmd,
    select_cmd,
    space_cmd,
    train_cmd,
)
from rs_search.errors import RsSearchError

app = typer.Typer(
    name="rs-search",
    help="Search ResNet-RS architectures and training recipes (Bello et al. 2021) "
    "on your hardware.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

_state = {"debug": False}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"rs-search {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
) -> None:
    _state["debug"] = debug


for _module in (
    models_cmd,
    space_cmd,
    train_cmd,
    latency_cmd,
    search_cmd,
    select_cmd,
    export_cmd,
    report_cmd,
    bench_cmd,
    db_cmd,
):
    _module.register(app)


def _usage_error(message: str, ctx: object | None) -> NoReturn:
    """One line and exit status 2, as for every other bad input. An empty message is the help a
    command group prints when called without a subcommand: it is already on the screen."""
    if message:
        where = getattr(ctx, "command_path", None) or "rs-search"
        line = " ".join(message.split())  # click may wrap a message over several lines
        typer.echo(f"error: {line} (see {where} --help)", err=True)
    sys.exit(2)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    args = list(argv if argv is not None else sys.argv[1:])
    # --debug is accepted anywhere on the line (before or after the subcommand), as users type it.
    debug = "--debug" in args
    if debug:
        args = ["--debug"] + [a for a in args if a != "--debug"]
    try:
        # Outside standalone mode click *returns* the code of a ``typer.Exit`` instead of exiting
        # (130 for Ctrl-C / KeyboardInterrupt, which typer turns into Exit(130)).
        code = app(args=args, standalone_mode=False, prog_name="rs-search")
        if isinstance(code, int) and code != 0:
            if code == 130:
                typer.echo("interrupted", err=True)
            sys.exit(code)
    except typer.TyperException as exc:
        # Usage errors (a missing or unknown option or command, ``--trials many``): typer raises
        # its own copy of click's exceptions, so ``click.ClickException`` does not catch them.
        _usage_error(exc.format_message(), getattr(exc, "ctx", None))
    except RsSearchError as exc:
        if debug:
            raise
        typer.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as exc:
        import click

        if isinstance(exc, click.ClickException):  # click itself, should a dependency raise it
            _usage_error(exc.format_message(), getattr(exc, "ctx", None))
        if debug:
            raise
        typer.echo(
            f"error: {type(exc).__name__}: {exc} (run with --debug for the traceback)", err=True
        )
        sys.exit(1)


if __name__ == "__main__":
    main()
