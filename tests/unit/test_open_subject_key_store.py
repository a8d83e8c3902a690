"""server.open_subject_key_store: where the per-subject keys live (nothing is opened here).

With the SQLite store: subject-keys.db in the data dir, or a sqlite:/// file. With a
PostgreSQL store: a separate PostgreSQL database is required; a local file (invisible
to the other replicas), nothing, or the store's own database is BAD_CONFIG at start.
"""

from __future__ import annotations

import pytest

from vault.config import Config, load_config
from vault.errors import FailedPreconditionError
from vault.server import open_subject_key_store
from vault.storage.subject_keys_postgres import PostgresSubjectKeyStore
from vault.storage.subject_keys_sqlite import SqliteSubjectKeyStore

MAIN = "postgresql://vault:s3cret-pw@db:5432/vault"
KEYS = "postgresql://vault:k3y-pw@keys-db:5432/vault_subject_keys"


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
