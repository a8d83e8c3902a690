"""wiring: the composition root picks the stores by config (nothing opened by open_*),
opens them for a command and builds the services with the configured limits; a bad
setting is one line naming it, never echoing a URL or password.

open_subject_key_store: with the SQLite store, subject-keys.db in the data dir, or a
sqlite:/// file. With a PostgreSQL store, a separate PostgreSQL database is required; a
local file (invisible to the other replicas), nothing, or the store's own database is
BAD_CONFIG at start.
"""

from __future__ import annotations

import pytest

from vault.config import Config, load_config
from vault.errors import FailedPreconditionError
from vault.storage.postgres import PostgresStore
from vault.storage.sqlite import SqliteStore
from vault.storage.subject_keys_postgres import PostgresSubjectKeyStore
from vault.storage.subject_keys_sqlite import SqliteSubjectKeyStore
from vault.wiring import init_data_dir, limits, open_store, open_subject_key_store, opened

MAIN = "postgresql://vault:s3cret-pw@db:5432/vault"
KEYS = "postgresql://vault:k3y-pw@keys-db:5432/vault_subject_keys"

# -- open_store ---------------------------------------------------------------------------


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


# -- open_subject_key_store --------------------------------------------------------------


def test_sqlite_default_is_the_file_in_the_data_dir(tmp_path):
    store = open_subject_key_store(Config(data_dir=tmp_path))
    assert isinstance(store, SqliteSubjectKeyStore)
    assert store.path == tmp_path / "subject-keys.db"


def test_a_sqlite_url_names_the_file(tmp_path):
    cfg = Config(data_dir=tmp_path, subject_key_database_url=f"sqlite://{tmp_path}/k/keys.db")
    store = open_subject_key_store(cfg)
    assert isinstance(store, SqliteSubjectKeyStore)
    assert store.path == tmp_path / "k" / "keys.db"


def test_postgres_store_with_a_separate_postgres_key_database(tmp_path):
    store = open_subject_key_store(
        Config(data_dir=tmp_path, database_url=MAIN, subject_key_database_url=KEYS)
    )
    assert isinstance(store, PostgresSubjectKeyStore)
    assert "k3y-pw" not in repr(store)
    assert "keys-db:5432/vault_subject_keys" in repr(store)


@pytest.mark.parametrize(
    ("keys_url", "says"),
    [
        ("", "needs subject_key_database_url"),
        ("sqlite:///var/lib/vault/subject-keys.db", "needs subject_key_database_url"),
        ("postgresql://other-user:pw@db/vault", "another database"),
        ("postgres://vault@db:5432/vault/", "another database"),
    ],
    ids=["missing", "local-file", "same-database", "same-database-spelled-otherwise"],
)
def test_postgres_store_refuses_anything_but_a_separate_database(tmp_path, keys_url, says):
    with pytest.raises(FailedPreconditionError, match=says) as raised:
        open_subject_key_store(
            Config(data_dir=tmp_path, database_url=MAIN, subject_key_database_url=keys_url)
        )
    assert raised.value.reason == "BAD_CONFIG"
    assert "s3cret-pw" not in str(raised.value)


def test_other_schemes_are_refused(tmp_path):
    with pytest.raises(FailedPreconditionError) as raised:
        open_subject_key_store(Config(data_dir=tmp_path, subject_key_database_url="mysql://x"))
    assert raised.value.reason == "BAD_CONFIG"


def test_the_setting_comes_from_the_environment_and_stays_out_of_a_repr(monkeypatch):
    monkeypatch.setenv("VAULT_SUBJECT_KEY_DATABASE_URL", KEYS)
    cfg = load_config(None, {})
    assert cfg.subject_key_database_url == KEYS
    assert "k3y-pw" not in repr(cfg)


# -- opened / build_services ------------------------------------------------------------


def test_limits_are_the_configured_ones(tmp_path):
    got = limits(Config(data_dir=tmp_path, max_batch=7, cvc_ttl=30.0, cvc_reveals=2))
    assert (got.max_batch, got.cvc_ttl_seconds, got.cvc_reveals) == (7, 30.0, 2)


async def test_opened_opens_the_configured_store_and_closes_it(tmp_path):
    cfg = Config(data_dir=tmp_path)
    async with opened(cfg) as vault:
        await init_data_dir(cfg, vault.store, vault.clock)
        assert [r.state for r in await vault.store.key_versions()] == ["primary"]
    assert (tmp_path / "vault.db").is_file()
    async with opened(cfg, need_keys=True) as vault:
        kek = await vault.master_key()
        assert kek is await vault.master_key()  # loaded once per command


async def test_a_command_gets_the_services_with_the_configured_limits(tmp_path):
    cfg = Config(data_dir=tmp_path, max_batch=3)
    async with opened(cfg) as vault:
        await init_data_dir(cfg, vault.store, vault.clock)
    async with opened(cfg, need_keys=True) as vault:
        services = await vault.services()
        assert services.limits.max_batch == 3
    assert (tmp_path / "subject-keys.db").is_file()


async def test_need_keys_without_a_master_key_is_one_line(tmp_path):
    cfg = Config(data_dir=tmp_path, kek_provider="shares")
    with pytest.raises(FailedPreconditionError) as raised:
        async with opened(cfg, need_keys=True):
            pass
    assert raised.value.reason == "VAULT_SEALED"
    assert "\n" not in str(raised.value)


async def test_a_bad_database_url_fails_before_anything_is_opened(tmp_path):
    with pytest.raises(FailedPreconditionError) as raised:
        async with opened(Config(data_dir=tmp_path, database_url="mysql://u:pw@h/db")):
            pass
    assert raised.value.reason == "BAD_CONFIG"
    assert "pw" not in str(raised.value)
    assert not (tmp_path / "vault.db").exists()
