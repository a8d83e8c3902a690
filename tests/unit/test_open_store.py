"""server.open_store: database_url picks the store (nothing is opened here)."""

from __future__ import annotations

import pytest

from vault.config import Config
from vault.errors import FailedPreconditionError
from vault.server import open_store
from vault.storage.postgres import PostgresStore
from vault.storage.sqlite import SqliteStore


def test_default_is_sqlite_in_the_data_dir(tmp_path):
    store = open_store(Config(data_dir=tmp_path))
    assert isinstance(store, SqliteStore)
    assert store.path == tmp_path / "vault.db"


def test_sqlite_url_names_the_file(tmp_path):
    store = open_store(Config(data_dir=tmp_path, database_url=f"sqlite://{tmp_path}/x/v.db"))
    assert isinstance(store, SqliteStore)
    assert store.path == tmp_path / "x" / "v.db"


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_postgres_url_and_its_repr_without_the_password(tmp_path, scheme):
    store = open_store(
        Config(data_dir=tmp_path, database_url=f"{scheme}://vault:s3cret-pw@db:5432/vault")
    )
    assert isinstance(store, PostgresStore)
    assert "s3cret-pw" not in repr(store)
    assert "db:5432/vault" in repr(store)


@pytest.mark.parametrize("url", ["mysql://x@y/z", "sqlite:relative.db", "vault.db"])
def test_other_urls_are_refused_without_echoing_them(tmp_path, url):
    with pytest.raises(FailedPreconditionError) as raised:
        open_store(Config(data_dir=tmp_path, database_url=url))
    assert raised.value.reason == "BAD_CONFIG"
    assert url not in str(raised.value)
