"""The one in-process runner of the ``rs-search`` console entry point for tests.

In-process (no interpreter start-up, so a test costs milliseconds rather than seconds); a test
that needs a real process (signals, torchrun, exit codes seen by a shell) uses
``tests.search.conftest``'s ``run_cli``, which starts one.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from rs_search.cli.main import main


def run_in_process(
    args: Sequence[str], capture: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    """``rs-search ARGS`` in this process: exit status, stdout, stderr (read through ``capture``,
    the test's ``capsys`` or ``capfd``)."""
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out, err = capture.readouterr()
    return code, out, err
