"""The per-subject key store on a PostgreSQL database of its own (subject_key_database_url).

A separate database, not a schema of the main one: dumps, base backups and WAL archives
of the main database must never carry the subject keys, or an erased subject's values
could be restored from them (README, "Data subjects"). PostgreSQL has no secure_delete:
a destroyed key's row stays in its page until VACUUM reuses the space, and in WAL until
the segment is recycled; so this database is kept small, with no backup (or one whose
retention is no longer than erasures may take to reach backups).

Writes are rare (a subject's first value, an erasure) and reads are cached by the domain
layer, so a small pool is enough. Every statement is a transaction of its own; the
first writer of a subject's key wins (ON CONFLICT DO NOTHING), on every replica.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from vault.errors import FailedPreconditionError, StoreUnavailableError
from vault.storage.postgres_open import (
    COMMAND_TIMEOUT,
    CONNECT_TIMEOUT,
    open_pool,
    redact_url,
)

__all__ = ["PostgresSubjectKeyStore"]

_Conn: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"

log = logging.getLogger(__name__)

_SCHEMA_VERSION = 1
_CONNECT_TIMEOUT = CONNECT_TIMEOUT
_COMMAND_TIMEOUT = COMMAND_TIMEOUT
_POOL_SIZE = 4
# Times the schema set-up is run again after racing another replica's.
_RETRIES = 8
_SCHEMA = (
    (
        "CREATE TABLE IF NOT EXISTS subject_key_schema ("
        " version INTEGER PRIMARY KEY)"  # schema version of this database (one row)
    ),
    (
        "CREATE TABLE IF NOT EXISTS subject_keys ("
        " tenant TEXT NOT NULL,"  # tenant of the subject
        " subject_ref BYTEA NOT NULL,"  # HMAC of the subject id (as tokens.subject_ref)
        " wrapped_key BYTEA NOT NULL,"  # the subject key, AES-GCM under subject-wrap:1
        " created_at DOUBLE PRECISION NOT NULL,"  # unix seconds
        " PRIMARY KEY (tenant, subject_ref))"
    ),
)
_CREATE_RACES = (
    asyncpg.UniqueViolationError,
    asyncpg.SerializationError,
    asyncpg.DeadlockDetectedError,
    asyncpg.DuplicateTableError,
    asyncpg.DuplicateObjectError,
)


class PostgresSubjectKeyStore:
    """SubjectKeyStore on one PostgreSQL database (never the main store's)."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._pool: asyncpg.Pool[asyncpg.Record] | None = None

    def __repr__(self) -> str:
        return f"PostgresSubjectKeyStore({redact_url(self._url)})"

    async def open(self) -> None:
        pool = await open_pool(
            self._url,
            max_size=_POOL_SIZE,
            application_name="vault-subject-keys",
            migrate=_migrate,
        )
        self._pool = pool

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), _CONNECT_TIMEOUT)
            except Exception:  # noqa: BLE001 - a database gone at close: drop the connections
                pool.terminate()

    def _ready(self) -> asyncpg.Pool[asyncpg.Record]:
        if self._pool is None:
            raise StoreUnavailableError("the subject-key store is not open")
        return self._pool

    async def _run(self, what: str, sql: str, *args: Any) -> list[asyncpg.Record]:
        pool = self._ready()
        try:
            return await pool.fetch(sql, *args, timeout=_COMMAND_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - the driver's errors become UNAVAILABLE
            log.error("subject-key store failed: %s", type(exc).__name__)
            raise StoreUnavailableError(f"the subject-key store could not {what}") from None

    async def subject_key(self, tenant: str, subject_ref: bytes) -> bytes | None:
        rows = await self._run(
            "be read",
            "SELECT wrapped_key FROM subject_keys WHERE tenant = $1 AND subject_ref = $2",
            tenant,
            subject_ref,
        )
        return bytes(rows[0][0]) if rows else None

    async def put_subject_key(
        self, tenant: str, subject_ref: bytes, wrapped_key: bytes, created_at: float
    ) -> bytes:
        while True:
            # One statement: the insert, or nothing (a concurrent first writer's commit,
            # which ON CONFLICT waits for); then the stored key is read.
            rows = await self._run(
                "commit",
                "INSERT INTO subject_keys (tenant, subject_ref, wrapped_key, created_at) "
                "VALUES ($1, $2, $3, $4) ON CONFLICT (tenant, subject_ref) DO NOTHING "
                "RETURNING wrapped_key",
                tenant,
                subject_ref,
                wrapped_key,
                created_at,
            )
            if rows:
                return bytes(rows[0][0])
            stored = await self.subject_key(tenant, subject_ref)
            if stored is not None:
                return stored
            # Another process's key, destroyed again in between (an erasure): try again.

    async def destroy_subject_key(self, tenant: str, subject_ref: bytes) -> bool:
        rows = await self._run(
            "commit",
            "DELETE FROM subject_keys WHERE tenant = $1 AND subject_ref = $2 RETURNING 1",
            tenant,
            subject_ref,
        )
        return bool(rows)


async def _migrate(conn: _Conn) -> None:
    for attempt in range(_RETRIES):
        try:
            async with conn.transaction():
                for statement in _SCHEMA:
                    await conn.execute(statement)
                version = await conn.fetchval("SELECT max(version) FROM subject_key_schema")
                if version is not None and int(version) > _SCHEMA_VERSION:
                    raise FailedPreconditionError(
                        "the subject-key store is newer than this vault; upgrade the vault",
                        reason="SCHEMA_TOO_NEW",
                    )
                await conn.execute(
                    "INSERT INTO subject_key_schema (version) VALUES ($1) "
                    "ON CONFLICT (version) DO NOTHING",
                    _SCHEMA_VERSION,
                )
        except _CREATE_RACES:
            # Another replica created the tables at the same moment: they exist now.
            if attempt == _RETRIES - 1:
                raise
            await asyncio.sleep(0.01 * 2**attempt)
        else:
            return
