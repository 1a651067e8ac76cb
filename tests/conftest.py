"""Shared fixtures: a fresh real PostgreSQL database per test.

The server comes from ``RS_SEARCH_TEST_POSTGRES`` (default: the local trust-auth server). Under CI
(``CI=true``) a missing server fails the run; on a laptop without PostgreSQL the tests skip with a
visible reason.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

DEFAULT_TEST_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def postgres_server_url() -> str:
    return os.environ.get("RS_SEARCH_TEST_POSTGRES", DEFAULT_TEST_POSTGRES)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """URL of a brand-new database, dropped after the test."""
    from rs_search.errors import StorageError
    from rs_search.storage.admin import create_database, drop_database

    server = postgres_server_url()
    name = f"rs_test_{uuid.uuid4().hex[:12]}"
    try:
        url = create_database(server, name)
    except StorageError as exc:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"PostgreSQL is required in CI: {exc}")
        pytest.skip(f"no PostgreSQL server for integration tests: {exc}")
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        drop_database(server, name)


# Tests that only need *a* latency figure (searches, selection, reports) get a short protocol in
# the CLIs they run (in this process or as subprocesses), which read $RS_SEARCH_LATENCY_PROTOCOL
# once at their entry point. Library calls take their protocol as an argument, so a test of the
# protocol itself (tests/latency/test_measure.py) passes the one it checks.
FAST_LATENCY_PROTOCOL = "min_time_s=0,settle_repeats=3,max_repeats=6"


@pytest.fixture(autouse=True)
def _fast_latency_protocol(monkeypatch: pytest.MonkeyPatch) -> None:
    if "RS_SEARCH_LATENCY_PROTOCOL" not in os.environ:
        monkeypatch.setenv("RS_SEARCH_LATENCY_PROTOCOL", FAST_LATENCY_PROTOCOL)
