"""Cutting or rewriting the audit trail behind the vault's back, on a real store (SQLite
file, PostgreSQL cluster) under a real server: verify names the break, and a writer that
finds the head not sealing the newest row refuses to append, so the next reveal fails
closed (AUDIT_UNAVAILABLE). A consistent rewrite (rows and head resealed with the audit
key) is caught only against an outside witness: a published head or --expect-seq."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg
import grpc
import pytest
from api_helpers import PURPOSE, assert_reason, expect_code, tokenize_request
from prometheus_client import REGISTRY

from vault.audit.chain import head_content
from vault.audit.trail import AuditTrail
from vault.errors import FailedPreconditionError
from vault.storage.base import AuditHead
from vault.storage.postgres import PostgresStore
from vault.storage.postgres_open import grant_server_role, migrate_schema
from vault.storage.subject_keys_postgres import PostgresSubjectKeyStore
from vault.v1 import token_service_pb2 as pb
from vault.wiring import DEV_ACTOR

PAN = "4111111111111111"
DEV_RECORDS = 1  # serve --dev audits its caller's creation as record 1
SERVER_ROLE = "vault_server"
SERVER_PASSWORD = "server-role-test-password"
_CREATE_SERVER_ROLE = (
    "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'vault_server') "
    "THEN CREATE ROLE vault_server LOGIN PASSWORD 'server-role-test-password'; END IF; END $$"
)

# What the owner (or anyone with the SQLite file) runs before tampering.
_SQLITE_UNGUARD = (
    "DROP TRIGGER audit_log_no_update; DROP TRIGGER audit_log_no_delete; "
    "DROP TRIGGER audit_head_forward_only; DROP TRIGGER audit_head_no_delete; "
    "DROP TRIGGER audit_tokens_no_delete"
)
_PG_UNGUARD = (
    "ALTER TABLE audit_log DISABLE TRIGGER USER; ALTER TABLE audit_head DISABLE TRIGGER USER; "
    "ALTER TABLE audit_tokens DISABLE TRIGGER USER"
)


@dataclass
class Backend:
    """A running vault and the way to run SQL on its store from outside the server."""

    vault: object
    run: Callable[[str], str]  # one or more statements, as the store's owner
    unguard: str

    def tamper(self, *statements: str) -> str:
        """Drop the store's guards (as the owner can), then run the statements."""
        return self.run("; ".join((self.unguard, *statements)))

    @property
    def trail(self) -> AuditTrail:
        trail = self.vault.server.audit  # type: ignore[attr-defined]
        assert isinstance(trail, AuditTrail)
        return trail


def _sqlite_runner(path) -> Callable[[str], str]:
    def run(script: str) -> str:
        with contextlib.closing(sqlite3.connect(path, timeout=10)) as conn:
            conn.executescript(script)
            conn.commit()
        return ""

    return run


@pytest.fixture(params=["sqlite", "postgres"])
async def backend(request, vault_factory) -> Backend:
    if request.param == "sqlite":
        vault = await vault_factory()
        return Backend(vault, _sqlite_runner(vault.db_path), _SQLITE_UNGUARD)
    cluster = request.getfixturevalue("pg_cluster")
    url = request.getfixturevalue("pg_database")
    keys_url = request.getfixturevalue("pg_subject_key_database")
    # The server runs as the least-privilege role; the owner migrated and granted it
    # (what `vaultctl store migrate --grant-to` does), and tampers as the owner.
    server_url, server_keys_url = await server_role_urls(cluster, url, keys_url)
    vault = await vault_factory(database_url=server_url, subject_key_database_url=server_keys_url)
    name = url.rsplit("/", 1)[1]
    return Backend(vault, lambda sql: cluster.psql(name, sql), _PG_UNGUARD)


async def server_role_urls(cluster, url: str, keys_url: str) -> tuple[str, str]:
    """Migrate both databases as the owner, grant SERVER_ROLE; its URLs."""
    cluster.psql(url.rsplit("/", 1)[1], _CREATE_SERVER_ROLE)
    keys = PostgresSubjectKeyStore(keys_url)
    await keys.open()
    await keys.close()
    for target, main in ((url, True), (keys_url, False)):
        conn = await asyncpg.connect(target)
        try:
            if main:
                await migrate_schema(conn)
            await grant_server_role(conn, SERVER_ROLE, audit=main)
        finally:
            await conn.close()
    where = f"{cluster.host}:{cluster.port}"
    return tuple(  # type: ignore[return-value]
        f"postgresql://{SERVER_ROLE}:{SERVER_PASSWORD}@{where}/{u.rsplit('/', 1)[1]}"
        for u in (url, keys_url)
    )


async def _reveals(backend: Backend, n: int) -> str:
    """Tokenize one PAN and reveal it n times (n records); returns the token."""
    v = backend.vault
    resp = await v.stub.Tokenize(tokenize_request("PAN", PAN), metadata=v.md)  # type: ignore[attr-defined]
    for _ in range(n):
        await _reveal(backend, resp.token)
    return resp.token


def _reveal(backend: Backend, token: str):
    v = backend.vault
    return v.stub.Detokenize(  # type: ignore[attr-defined]
        pb.DetokenizeRequest(token=token, purpose=PURPOSE),
        metadata=v.md,  # type: ignore[attr-defined]
    )


async def _refused(backend: Backend, token: str) -> None:
    exc = await expect_code(_reveal(backend, token), grpc.StatusCode.UNAVAILABLE)
    assert_reason(exc, "AUDIT_UNAVAILABLE")
    assert PAN not in (exc.details() or "")
    assert REGISTRY.get_sample_value("vault_audit_chain_broken") == 1


async def _broken(backend: Backend) -> tuple[int, str]:
    result = await backend.trail.verify()
    assert result.broken is not None
    return result.broken.seq, result.broken.problem


async def test_a_new_store_has_a_sealed_genesis_head_and_verifies_empty(backend):
    # The test vault serves --dev, whose caller's creation is record 1 (DEV_RECORDS):
    # it chains from the genesis head sealed with the audit key, and nothing else is there.
    store = backend.vault.server.store
    head = await store.audit_head()
    assert head is not None
    assert head.seq == DEV_RECORDS
    (dev,) = await store.audit_records(0, 10)
    assert (dev.seq, dev.action, dev.caller) == (1, "caller.add", DEV_ACTOR)
    result = await backend.trail.verify()
    assert (result.intact, result.records) == (True, DEV_RECORDS)
    # Without that record the store is broken, not empty: the genesis head is gone too.
    backend.tamper("DELETE FROM audit_log", "DELETE FROM audit_head")
    assert await _broken(backend) == (1, "head missing (deleted)")


async def test_an_edited_row_is_named(backend):
    token = await _reveals(backend, 3)
    backend.tamper("UPDATE audit_log SET purpose = 'nothing to see' WHERE seq = 2")
    assert await _broken(backend) == (2, "edited (mac mismatch)")
    # The head still seals the newest row: the writer appends (verify names the break).
    await _reveal(backend, token)
    assert (await _broken(backend))[0] == 2


async def test_a_row_deleted_in_the_middle_is_named(backend):
    await _reveals(backend, 3)
    backend.tamper("DELETE FROM audit_log WHERE seq = 2")
    assert await _broken(backend) == (2, "missing (deleted)")


async def test_a_cut_tail_is_refused_by_the_writer_and_named(backend):
    token = await _reveals(backend, 3)  # records 2-4 after the dev caller's
    backend.tamper("DELETE FROM audit_log WHERE seq = 4")
    await _refused(backend, token)
    assert await _broken(backend) == (4, "missing (deleted)")
    rows = await backend.vault.server.store.audit_records(0, 10)
    assert [r.seq for r in rows] == [1, 2, 3]  # nothing appended, nothing repaired
    assert (await backend.vault.server.store.audit_head()).seq == 4


async def test_all_rows_deleted_is_broken_not_empty(backend):
    token = await _reveals(backend, 2)
    backend.tamper("DELETE FROM audit_log")
    assert await _broken(backend) == (1, "missing (deleted)")
    await _refused(backend, token)


async def test_rows_and_head_deleted_is_broken_not_empty(backend):
    token = await _reveals(backend, 2)
    backend.tamper("DELETE FROM audit_log", "DELETE FROM audit_head")
    assert await _broken(backend) == (1, "head missing (deleted)")
    await _refused(backend, token)
    assert await backend.vault.server.store.audit_head() is None


async def test_the_head_cannot_be_moved_back_or_removed_while_guarded(backend):
    await _reveals(backend, 2)
    for sql in ("UPDATE audit_head SET seq = 1", "DELETE FROM audit_head"):
        with pytest.raises(Exception, match="audit_head"):
            backend.run(sql)
    assert (await backend.trail.verify()).intact


async def test_a_consistent_rewrite_is_caught_only_by_the_witness(backend):
    store = backend.vault.server.store
    token = await _reveals(backend, 4)  # records 2-5 after the dev caller's
    published = await store.audit_head()
    assert published.seq == 5
    assert REGISTRY.get_sample_value("vault_audit_head_seq") == 5
    # An insider with the audit key cuts records 4-5 (and their reveal index rows) and
    # reseals the head on record 3.
    [third] = await store.audit_records(2, 1)
    resealed = backend.trail.seal(third.mac, head_content(3))
    blob = _blob(backend, resealed)
    backend.tamper(
        "DELETE FROM audit_log WHERE seq > 3",
        "DELETE FROM audit_tokens WHERE seq > 3",
        f"UPDATE audit_head SET seq = 3, mac = {blob}",  # noqa: S608 - the test's own bytes
    )
    assert (await backend.trail.verify()).intact  # consistent: the chain alone cannot tell
    assert await backend.trail.check_witness([AuditHead(3, resealed)]) is None
    broken = await backend.trail.check_witness([published])
    assert broken is not None
    assert (broken.seq, broken.problem) == (5, "missing (at or below a published head)")
    broken = await backend.trail.check_witness([], expect_seq=5)
    assert broken is not None
    assert broken.seq == 4
    # The writer extends the rewritten chain (it is consistent): seq 4 again, and the
    # published head then catches the rewrite as a record that does not match it.
    await _reveal(backend, token)
    await _reveal(backend, token)
    broken = await backend.trail.check_witness([published])
    assert broken is not None
    assert (broken.seq, broken.problem) == (5, "rewritten (does not match a published head)")


def _blob(backend: Backend, data: bytes) -> str:
    return f"X'{data.hex()}'" if backend.unguard == _SQLITE_UNGUARD else f"'\\x{data.hex()}'::bytea"


@pytest.fixture
async def pg_backend(vault_factory, pg_cluster, pg_database, pg_subject_key_database):
    server_url, keys_url = await server_role_urls(pg_cluster, pg_database, pg_subject_key_database)
    vault = await vault_factory(database_url=server_url, subject_key_database_url=keys_url)
    name = pg_database.rsplit("/", 1)[1]
    backend = Backend(vault, lambda sql: pg_cluster.psql(name, sql), _PG_UNGUARD)
    return backend, server_url


async def test_truncate_is_refused_by_the_trigger_and_detected_when_dropped(pg_backend):
    backend, _ = pg_backend
    token = await _reveals(backend, 2)
    for table in ("audit_log", "audit_head", "audit_tokens"):
        with pytest.raises(Exception, match="cannot be truncated"):
            backend.run(f"TRUNCATE {table}")
    assert (await backend.trail.verify()).intact
    # The owner drops the guards and truncates both: broken, and the writer refuses.
    backend.tamper("TRUNCATE audit_log", "TRUNCATE audit_head")
    assert await _broken(backend) == (1, "head missing (deleted)")
    await _refused(backend, token)


async def test_the_server_role_cannot_cut_the_trail_or_change_the_schema(pg_backend):
    backend, server_url = pg_backend
    await _reveals(backend, 1)
    conn = await asyncpg.connect(server_url)
    try:
        for statement in (
            "TRUNCATE audit_log",
            "DELETE FROM audit_log",
            "UPDATE audit_log SET purpose = 'x'",
            "DELETE FROM audit_head",
            "TRUNCATE audit_tokens",
            "DELETE FROM audit_tokens",
            "DROP TRIGGER audit_head_forward ON audit_head",
            "ALTER TABLE audit_log DISABLE TRIGGER USER",
            "CREATE TABLE escape (x int)",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(statement)
    finally:
        await conn.close()
    assert (await backend.trail.verify()).intact


async def test_the_server_role_refuses_a_schema_with_pending_migrations(pg_backend):
    backend, server_url = pg_backend
    backend.run("DELETE FROM schema_migrations WHERE version = 9")
    store = PostgresStore(server_url)
    with pytest.raises(FailedPreconditionError, match="vaultctl store migrate") as caught:
        await store.open()
    assert caught.value.reason == "MIGRATIONS_PENDING"
    assert SERVER_PASSWORD not in str(caught.value)
