from __future__ import annotations

import pytest
from sqlalchemy import text

from rs_search.errors import StorageError
from rs_search.storage.admin import create_database, drop_database
from rs_search.storage.engine import make_engine
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
