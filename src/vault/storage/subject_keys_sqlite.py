"""The per-subject key store on its own SQLite file (DATA_DIR/subject-keys.db).

Kept out of vault.db on purpose: a backup of vault.db taken before an erasure must not
carry the subject keys, or the erased values could be restored from it. Back this file
up separately, if at all, with a retention no longer than erasures may take to reach
backups (README, "Data subjects"). WAL, synchronous=FULL, secure_delete: a destroyed
key is overwritten in the file, not left in a free page.

Writes are rare (a subject's first value, an erasure) and reads are cached by the
domain layer, so one connection serialised by a lock is enough.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

import aiosqlite

from vault.errors import FailedPreconditionError, StoreUnavailableError

__all__ = ["SqliteSubjectKeyStore"]

_SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS subject_keys (
    tenant       TEXT NOT NULL,                -- tenant of the subject
    subject_ref  BLOB NOT NULL,                -- HMAC of the subject id (as tokens.subject_ref)
    wrapped_key  BLOB NOT NULL,                -- the subject key, AES-GCM under subject-wrap:1
    created_at   REAL NOT NULL,                -- unix seconds
    PRIMARY KEY (tenant, subject_ref)
) WITHOUT ROWID
"""


class SqliteSubjectKeyStore:
    """SubjectKeyStore on one SQLite file."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._conn: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return "SqliteSubjectKeyStore()"

    @property
    def path(self) -> Path:
        return self._path

    async def open(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            conn = await aiosqlite.connect(self._path, isolation_level=None)
        except sqlite3.Error as exc:
            raise FailedPreconditionError(
                "cannot open the subject-key store", reason="STORE_OPEN_FAILED"
            ) from exc
        try:
            await conn.execute("PRAGMA busy_timeout = 10000")
            await conn.execute("PRAGMA journal_mode = WAL")
            await conn.execute("PRAGMA synchronous = FULL")
            # A destroyed subject key must not linger in a free page: that is the erasure.
            await conn.execute("PRAGMA secure_delete = ON")
            await conn.execute("BEGIN IMMEDIATE")
            rows = list(await conn.execute_fetchall("PRAGMA user_version"))
            version = int(rows[0][0]) if rows else 0
            if version > _SCHEMA_VERSION:
                raise FailedPreconditionError(  # noqa: TRY301 - closed below
                    "the subject-key store is newer than this vault; upgrade the vault",
                    reason="SCHEMA_TOO_NEW",
                )
            await conn.execute(_SCHEMA)
            await conn.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
            await conn.execute("COMMIT")
        except BaseException as exc:
            with contextlib.suppress(Exception):
                await conn.close()
            if isinstance(exc, sqlite3.Error):
                raise FailedPreconditionError(
                    "cannot open the subject-key store", reason="STORE_OPEN_FAILED"
                ) from exc
            raise
        self._conn = conn

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            async with self._lock:
                with contextlib.suppress(sqlite3.Error):
                    await conn.close()

    def _connection(self) -> aiosqlite.Connection:
        if self._conn is None:
            raise StoreUnavailableError("the subject-key store is not open")
        return self._conn

    async def subject_key(self, tenant: str, subject_ref: bytes) -> bytes | None:
        conn = self._connection()
        async with self._lock:
            try:
                rows = list(
                    await conn.execute_fetchall(
                        "SELECT wrapped_key FROM subject_keys WHERE tenant = ? AND subject_ref = ?",
                        (tenant, subject_ref),
                    )
                )
            except sqlite3.Error as exc:
                raise StoreUnavailableError("the subject-key store could not be read") from exc
        return bytes(rows[0][0]) if rows else None

    async def put_subject_key(
        self, tenant: str, subject_ref: bytes, wrapped_key: bytes, created_at: float
    ) -> bytes:
        conn = self._connection()
        async with self._lock:
            try:
                # IMMEDIATE: two processes creating the same subject's key agree on one.
                await conn.execute("BEGIN IMMEDIATE")
                await conn.execute(
                    "INSERT INTO subject_keys (tenant, subject_ref, wrapped_key, created_at) "
                    "VALUES (?, ?, ?, ?) ON CONFLICT (tenant, subject_ref) DO NOTHING",
                    (tenant, subject_ref, wrapped_key, created_at),
                )
                rows = list(
                    await conn.execute_fetchall(
                        "SELECT wrapped_key FROM subject_keys WHERE tenant = ? AND subject_ref = ?",
                        (tenant, subject_ref),
                    )
                )
                await conn.execute("COMMIT")
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    await conn.execute("ROLLBACK")
                raise StoreUnavailableError("the subject-key store could not commit") from exc
        return bytes(rows[0][0])

    async def destroy_subject_key(self, tenant: str, subject_ref: bytes) -> bool:
        conn = self._connection()
        async with self._lock:
            try:
                cur = await conn.execute(
                    "DELETE FROM subject_keys WHERE tenant = ? AND subject_ref = ?",
                    (tenant, subject_ref),
                )
                deleted = cur.rowcount > 0
                await cur.close()
                # Move the overwritten pages out of the WAL into the file now, so no copy
                # of the destroyed key waits in the WAL for the next checkpoint.
                await conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as exc:
                raise StoreUnavailableError("the subject-key store could not commit") from exc
        return deleted
