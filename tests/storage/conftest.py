"""Fixtures of the storage contract suite: every test here runs against every store.

A backend gives the suite three things: a way to build a new, unopened store on this
test's own database (twice for "two processes on one database"), and an out-of-band
way to record a schema version the code does not know. Adding the PostgreSQL store
means adding one entry to ``BACKENDS``; no test changes. The PostgreSQL backend gets a
fresh database of the session's throwaway cluster (tests/conftest.py) per test.
"""

from __future__ import annotations

import hashlib
import itertools
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from vault.storage.base import CallerRow, Store, SubjectKeyStore, TokenRecord
from vault.storage.postgres import PostgresStore
from vault.storage.sqlite import SqliteStore
from vault.storage.subject_keys_postgres import PostgresSubjectKeyStore
from vault.storage.subject_keys_sqlite import SqliteSubjectKeyStore

# The fixed "now" of the suite (unix seconds); tests move time by passing other values.
NOW = 1_800_000_000.0


@dataclass(frozen=True, slots=True)
class Backend:
    name: str
    # A new, unopened store on this test's database; each call is another "process".
    new_store: Callable[[], Store]
    # Records migration ``version`` as applied, behind the store's back.
    record_schema_version: Callable[[int], Awaitable[None]]


def _sqlite_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    path = tmp_path / "vault.db"

    async def record_schema_version(version: int) -> None:
        conn = sqlite3.connect(path)
        try:
            conn.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (?, 'test')",
                (version,),
            )
            conn.commit()
        finally:
            conn.close()

    return Backend("sqlite", lambda: SqliteStore(path), record_schema_version)


def _postgres_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    url = request.getfixturevalue("pg_database")
    cluster = request.getfixturevalue("pg_cluster")
    database = url.rsplit("/", 1)[1]

    async def record_schema_version(version: int) -> None:
        sql = f"INSERT INTO schema_migrations (version) VALUES ({int(version)})"  # noqa: S608 - an int
        cluster.psql(database, sql)

    return Backend("postgres", lambda: PostgresStore(url), record_schema_version)


BACKENDS: dict[str, Callable[[pytest.FixtureRequest, Path], Backend]] = {
    "sqlite": _sqlite_backend,
    "postgres": _postgres_backend,
}


@pytest.fixture(params=sorted(BACKENDS))
def backend(request, tmp_path) -> Backend:
    return BACKENDS[request.param](request, tmp_path)


@pytest.fixture
async def empty_store(backend):
    """An open store with nothing in it (not even a key version)."""
    store = backend.new_store()
    await store.open()
    yield store
    await store.close()


@pytest.fixture
async def store(empty_store):
    """An open store whose data-key version 1 is primary (token rows name a key version)."""
    version = await empty_store.add_key_version(b"wrapped-dek-1", "kek-test", NOW, primary=True)
    assert version == 1
    return empty_store


@pytest.fixture
def make_record():
    """Builds TokenRecords with unique tokens, fingerprints and ciphertexts by default."""
    counter = itertools.count()

    def make(**fields) -> TokenRecord:
        n = next(counter)
        values = {
            "token": f"tok_{n:06d}",
            "tenant": "tenant-a",
            "kind": 1,
            "token_format": 1,
            "key_version": 1,
            # NUL and high bytes: blobs must come back byte for byte.
            "ciphertext": b"\x00\xff" + hashlib.sha256(b"ct%d" % n).digest(),
            "fingerprint": hashlib.sha256(b"fp%d" % n).digest(),
            "deterministic": False,
            "subject_ref": None,
            "request_id": None,
            "request_hash": None,
            "created_at": NOW,
            "expires_at": None,
        }
        values.update(fields)
        return TokenRecord(**values)

    return make


@pytest.fixture
def make_caller():
    def make(name: str, **fields) -> CallerRow:
        values = {
            "name": name,
            "tenant": "tenant-a",
            "scopes": ("tokenize", "detokenize:PAN"),
            "key_id": f"kid_{name}",
            "key_hash": hashlib.sha256(name.encode()).digest(),
            "created_at": NOW,
            "expires_at": None,
            "revoked_at": None,
        }
        values.update(fields)
        return CallerRow(**values)

    return make


# Subject-key stores (kept apart from the Store; see SubjectKeyStore): each entry gives
# a maker of new, unopened stores on this test's own subject-key database.
def _sqlite_subject_keys(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Callable[[], SubjectKeyStore]:
    return lambda: SqliteSubjectKeyStore(tmp_path / "subject-keys.db")


def _postgres_subject_keys(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Callable[[], SubjectKeyStore]:
    # A second fresh database of the cluster: never the main store's (pg_database).
    cluster = request.getfixturevalue("pg_cluster")
    name = cluster.create_database()
    request.addfinalizer(lambda: cluster.drop_database(name))
    url = cluster.url(name)
    return lambda: PostgresSubjectKeyStore(url)


SUBJECT_KEY_BACKENDS: dict[
    str, Callable[[pytest.FixtureRequest, Path], Callable[[], SubjectKeyStore]]
] = {
    "sqlite": _sqlite_subject_keys,
    "postgres": _postgres_subject_keys,
}


@pytest.fixture(params=sorted(SUBJECT_KEY_BACKENDS))
def new_subject_key_store(request, tmp_path) -> Callable[[], SubjectKeyStore]:
    """A new, unopened subject-key store on this test's database (each call: a process)."""
    return SUBJECT_KEY_BACKENDS[request.param](request, tmp_path)
