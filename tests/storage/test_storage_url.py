from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from rs_search.cli.main import main
from rs_search.errors import StorageError
from rs_search.storage.admin import create_database, drop_database
from rs_search.storage.engine import CONNECT_TIMEOUT_S, engine_kwargs, make_engine
from rs_search.storage.url import DEFAULT_STORAGE, mask_url, resolve_storage_url
from tests.conftest import postgres_server_url


def test_mask_hides_password_in_parseable_and_raw_urls() -> None:
    assert "hunter2" not in mask_url("postgresql+psycopg://alice:hunter2@db:5432/s")
    assert "alice" in mask_url("postgresql+psycopg://alice:hunter2@db:5432/s")
    assert "hunter2" not in mask_url("not a url://bob:hunter2@x")


def test_resolution_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RS_SEARCH_STORAGE", raising=False)
    assert resolve_storage_url(None).render_as_string() == DEFAULT_STORAGE
    monkeypatch.setenv("RS_SEARCH_STORAGE", "sqlite:///env.db")
    assert resolve_storage_url(None).database == "env.db"
    assert resolve_storage_url("sqlite:///flag.db").database == "flag.db"
    # plain postgresql:// is pointed at the psycopg (v3) driver we ship
    assert resolve_storage_url("postgresql://u@h/d").drivername == "postgresql+psycopg"


@pytest.mark.parametrize("bad", ["nonsense", "oracle://u:pw@h/d"])
def test_bad_urls_are_one_clear_error(bad: str) -> None:
    with pytest.raises(StorageError) as info:
        resolve_storage_url(bad)
    assert "pw" not in str(info.value)


# Each holds the password s3cr3t (split where the text splits it); none may show any piece of it.
LEAKY = {
    "unescaped @": "postgresql://alice:s3cr@t3-pw@db.example:5432/s",
    "unescaped @ and :": "postgresql://alice:s3cr@t3:pw@db.example:5432/s",
    "no scheme": "alice:s3cr3t-pw@db.example/s",
    "libpq keywords": "host=db.example user=alice password=s3cr3t-pw dbname=s",
    "quoted keyword": "host=db.example password='s3cr3t pw' dbname=s",
    "free text": "the study db is alice:s3cr3t-pw@db.example please",
    "bad port": "postgresql://alice:s3cr3t-pw@db.example:port/s",
    "bad ipv6": "postgresql://alice:s3cr3t-pw@[::1/s",
    "password in query": "postgresql+psycopg://alice@db.example/s?password=s3cr3t-pw",
    "mysql": "mysql://alice:s3cr3t-pw@db.example/s",
}
PIECES = ("s3cr", "t3-pw", "t3:pw", "s3cr3t", "3t pw")


@pytest.mark.parametrize("raw", list(LEAKY.values()), ids=list(LEAKY))
def test_no_piece_of_a_password_is_ever_shown(raw: str) -> None:
    shown = [mask_url(raw)]
    try:
        shown.append(mask_url(resolve_storage_url(raw)))
    except StorageError as exc:
        shown.append(str(exc))
    for line in shown:
        assert not any(piece in line for piece in PIECES), line
    assert "alice" in shown[0] or "password=***" in shown[0]  # still says whose URL it was


@pytest.mark.parametrize("raw", ["s3cr@t3-pw", "s3cr:t3-pw", "s3cr/t3-pw", "s3cr t3-pw"])
def test_a_password_pasted_alone_is_not_shown_at_all(raw: str) -> None:
    """Text with neither a scheme nor ``user:`` may be nothing but a password (the fuzz test's
    bare-text form showed the half after an ``@``)."""
    with pytest.raises(StorageError) as info:
        resolve_storage_url(raw)
    assert mask_url(raw) == "***"
    assert not any(piece in str(info.value) for piece in PIECES), str(info.value)


@pytest.mark.parametrize("raw", ["sqlite://", "sqlite:///:memory:"])
def test_an_in_memory_database_is_refused(raw: str) -> None:
    """A study in start's own memory vanishes with it: its workers exited 2, 'study not found'."""
    with pytest.raises(StorageError, match="in-memory database.*give a file"):
        resolve_storage_url(raw)


@pytest.mark.parametrize(
    "raw", [v for k, v in LEAKY.items() if k != "password in query"], ids=lambda v: v[:24]
)
def test_cli_refuses_bad_urls_in_one_line_without_the_password(
    raw: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["worker", "--study", "s", "--storage", raw])
    out, err = capsys.readouterr()
    assert info.value.code == 2, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: storage URL"), err
    assert not any(piece in out + err for piece in PIECES), err
    assert list(tmp_path.iterdir()) == []


def test_unescaped_at_says_how_to_escape() -> None:
    with pytest.raises(StorageError, match="%40"):
        resolve_storage_url("postgresql://alice:s3cr@t3@db.example/s")


def test_mysql_is_refused_with_the_allowed_databases() -> None:
    # We ship no MySQL driver and test nothing on MySQL: one line naming what is allowed.
    with pytest.raises(StorageError, match="allowed: sqlite, postgresql"):
        resolve_storage_url("mysql://alice@db.example/s")


def test_a_driver_that_is_not_installed_is_one_line() -> None:
    with pytest.raises(StorageError, match="driver 'postgresql\\+nosuchdriver' is not available"):
        resolve_storage_url("postgresql+nosuchdriver://alice@db.example/s")


@pytest.mark.parametrize(
    "raw",
    [
        "sqlite:///x.db?timeout=abc",
        "sqlite:///x.db?timeout=-1",
        "sqlite:///x.db?timeout=nan",
        "postgresql://alice@db.example/s?connect_timeout=abc",
        "postgresql://alice@db.example/s?connect_timeout=1.5",
        "postgresql://alice@db.example/s?connect_timeout=-5",
    ],
)
def test_bad_timeout_query_values_are_refused(raw: str) -> None:
    with pytest.raises(StorageError, match="is not a number of"):
        resolve_storage_url(raw)


def test_bad_timeout_query_through_start_is_exit_2_and_creates_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before the fix: ``ValueError: could not convert string to float`` and exit 1."""
    monkeypatch.chdir(tmp_path)
    space = Path(__file__).resolve().parents[2] / "spaces" / "quickstart.yaml"
    with pytest.raises(SystemExit) as info:
        main(
            ["start", "--space", str(space), "--budget", "1epochs", "--trials", "1",
             "--storage", "sqlite:///x.db?timeout=abc"]
        )  # fmt: skip
    err = capsys.readouterr().err
    assert info.value.code == 2, err
    assert "?timeout='abc'" in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_timeouts_in_the_url_win_over_ours() -> None:
    url = resolve_storage_url("postgresql://alice@db.example/s?connect_timeout=3")
    assert "connect_args" not in engine_kwargs(url)
    assert engine_kwargs(resolve_storage_url("postgresql://a@h/d"))["connect_args"] == {
        "connect_timeout": CONNECT_TIMEOUT_S
    }
    assert engine_kwargs(resolve_storage_url("sqlite:///x.db?timeout=5")) == {}


def test_unreachable_server_masks_password() -> None:
    # Port 1 on loopback: nothing listens there, so the connection is refused at once.
    with pytest.raises(StorageError) as info:
        make_engine("postgresql+psycopg://alice:s3cr3t-pw@127.0.0.1:1/x")
    assert "s3cr3t-pw" not in str(info.value)
    assert "127.0.0.1" in str(info.value)


@pytest.mark.postgres
def test_create_and_drop_throwaway_database(postgres_url: str) -> None:
    # The fixture already made one database through create_database; make a second here too.
    server = postgres_server_url()
    name = "rs_test_throwaway_" + postgres_url.rsplit("_", 1)[-1]
    url = create_database(server, name)
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT current_database()")).scalar() == name
    finally:
        engine.dispose()
    drop_database(server, name)
    admin = make_engine(server)
    try:
        with admin.connect() as conn:
            exists = conn.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}
            ).first()
    finally:
        admin.dispose()
    assert exists is None


@pytest.mark.postgres
def test_password_masked_when_auth_fails(postgres_url: str) -> None:
    # A role that does not exist: the server rejects it, and the message must not show the password.
    bad = postgres_url.replace("postgres@", "no_such_role:pa55word@", 1)
    with pytest.raises(StorageError) as info:
        make_engine(bad)
    assert "pa55word" not in str(info.value)


@pytest.mark.slow
def test_a_server_that_never_answers_fails_in_seconds(tmp_path: Path) -> None:
    """A listening socket that never speaks (a hung or firewalled server): libpq waits for the
    server's first message forever without a connect timeout. Before the fix this test ran into
    its own 90 s limit; with ``CONNECT_TIMEOUT_S`` the connection fails with one clear line."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel completes the handshake; nobody ever answers
        port = silent.getsockname()[1]
        code = (
            "from rs_search.storage.engine import make_engine\n"
            f"make_engine('postgresql://alice:s3cr3t-pw@127.0.0.1:{port}/s')"
        )
        started = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=90, cwd=tmp_path
        )
        took = time.monotonic() - started
    assert proc.returncode != 0
    assert "StorageError: cannot reach storage" in proc.stderr
    assert "s3cr3t" not in proc.stderr
    assert took < CONNECT_TIMEOUT_S + 30
