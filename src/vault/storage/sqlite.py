"""The embedded store: SQLite through aiosqlite, WAL, synchronous=FULL, group commit.

One writer task owns the write connection and drains a queue (sql/batch.py): every
write waiting when it wakes goes into one transaction and one fsync (group commit), and
each caller is answered only once that transaction is durable. One reader task owns a
read connection and answers every lookup waiting when it wakes with one query. Sharing
one aiosqlite connection between committing coroutines raises InterfaceError; owning it
avoids that, and the batching is where the throughput comes from (an aiosqlite round
trip costs tens of microseconds, a SQLite row a few).

The write rules are written once for both stores (sql/tokens.py, keys.py, callers.py,
subjects.py, retention.py, leases.py) as generators of statements (sql/tx.py); this
module drives them on the writer thread (sqlite_commit.py), each write in a savepoint of the group's
transaction. What is SQLite's own: the connections and pragmas, the migrations, the
inline and batched token reads, rewrap, the audit append and the windowed retention purge.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from vault.errors import FailedPreconditionError, StoreUnavailableError
from vault.storage.base import (
    CommitObserver,
    RewrapRow,
    RewrapUpdate,
    TokenRecord,
)
from vault.storage.sql.batch import (
    AuditOp,
    InsertOp,
    ReadOp,
    WriteOp,
    answer_batch,
    drain,
    fail_batch,
    fail_waiting,
    queued_read,
    read_weight,
)
from vault.storage.sql.codecs import chunks, token_from_row
from vault.storage.sql.columns import HELD, TOKEN_COLUMNS
from vault.storage.sql.dialect import SQLITE
from vault.storage.sql.retention import record_purge
from vault.storage.sql.schema import migrations
from vault.storage.sql.store import SqlStore
from vault.storage.sql.tx import Tx, run
from vault.storage.sqlite_commit import MAX_PARAMS, commit_sync

__all__ = ["SqliteStore", "migrations"]

log = logging.getLogger(__name__)

T = TypeVar("T")

# Most lookups answered by one read query.
_MAX_READ_BATCH = 512
# Most waiting writes coalesced into one transaction.
_MAX_WRITE_BATCH = 256
# Row ids the retention purge scans per read query (bounded work per query).
_RETENTION_WINDOW = 50_000


def _split_statements(script: str) -> list[str]:
    """Statements of a migration script (complete_statement knows about triggers)."""
    statements, buf = [], ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            if buf.strip():
                statements.append(buf.strip())
            buf = ""
    if buf.strip() and not all(
        ln.strip().startswith("--") for ln in buf.strip().splitlines() if ln.strip()
    ):
        statements.append(buf.strip())
    return statements


_Op = InsertOp | WriteOp | AuditOp

# Statements the connection keeps prepared (sqlite3 caches by text; the multi-row
# inserts of sqlite_commit.py make one text per row count).
_CACHED_STATEMENTS = 512


def _rewrap(updates: Sequence[RewrapUpdate], encryptions: int) -> Tx[int]:
    done = 0
    for u in updates:
        done += yield run(
            "UPDATE tokens SET ciphertext = ?, key_version = ? "
            "WHERE token = ? AND key_version = ? AND ciphertext = ?",
            u.new_ciphertext,
            u.new_version,
            u.token,
            u.old_version,
            u.old_ciphertext,
        )
    if updates and encryptions:
        yield run(
            "UPDATE key_versions SET encryptions = encryptions + ? WHERE version = ?",
            encryptions,
            updates[0].new_version,
        )
    return done


def _delete_retained(
    tenant: str, kind: int, created_before: float, now: float, ids: Sequence[int]
) -> Tx[int]:
    """Delete the candidates, re-checking every condition (a row held meanwhile stays)."""
    purged = 0
    for chunk in chunks(ids, MAX_PARAMS):
        purged += yield run(
            f"DELETE FROM tokens WHERE id IN ({','.join('?' * len(chunk))}) "  # noqa: S608 - placeholders only
            f"AND tenant = ? AND kind = ? AND created_at < ? AND NOT ({HELD})",
            *chunk,
            tenant,
            kind,
            created_before,
        )
    if purged:
        yield from record_purge(SQLITE, tenant, kind, purged, now)
    return purged


async def _enable_wal(conn: aiosqlite.Connection, wait_seconds: float = 10.0) -> None:
    """Switch to WAL, waiting out another process doing the same on a new file: that
    switch takes a write lock without SQLite's busy handler, so busy_timeout does not
    cover it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_seconds
    pause = 0.005
    while True:
        try:
            rows = await conn.execute_fetchall("PRAGMA journal_mode = WAL")
        except sqlite3.OperationalError as exc:
            busy = exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY
            if not busy or loop.time() >= deadline:
                raise
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.1)
            continue
        mode = str(next(iter(rows))[0]).lower() if rows else ""
        if mode != "wal":
            raise FailedPreconditionError(
                "the SQLite store cannot use WAL", reason="STORE_OPEN_FAILED"
            )
        return


class SqliteStore(SqlStore):
    """Store on one SQLite file (see module docstring for the concurrency design)."""

    _dialect = SQLITE

    def __init__(
        self,
        path: Path,
        *,
        on_commit: CommitObserver | None = None,
        cache_mib: int = 128,
        inline_read_max: int = 8,
    ) -> None:
        self._path = path
        self._on_commit = on_commit
        self._cache_mib = cache_mib
        # Lookups of at most this many tokens run on the event loop's own read-only
        # connection: a WAL read of a few rows from the page cache costs ~15 us, a
        # round trip to the reader thread ~100 us of wake-ups (measured in bench/:
        # detokenize_unary at concurrency 1 went from 890 to 1,221 calls/s). Larger
        # reads go to the reader thread, where SQLite runs beside the event loop.
        self._inline_read_max = inline_read_max
        self._inline: sqlite3.Connection | None = None
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._write_queue: asyncio.Queue[_Op | None] = asyncio.Queue()
        self._read_queue: asyncio.Queue[ReadOp | None] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False

    def __repr__(self) -> str:
        return "SqliteStore()"

    async def _rows(self, sql: str, *args: Any) -> list[Any]:
        return await self._query(sql, args)

    @property
    def path(self) -> Path:
        return self._path

    # -- lifecycle ---------------------------------------------------------------

    async def _connect(self) -> aiosqlite.Connection:
        try:
            conn = await aiosqlite.connect(
                self._path, isolation_level=None, cached_statements=_CACHED_STATEMENTS
            )
        except sqlite3.Error as exc:
            raise FailedPreconditionError(
                "cannot open the SQLite store", reason="STORE_OPEN_FAILED"
            ) from exc
        try:
            await conn.execute("PRAGMA busy_timeout = 10000")
            await conn.execute(f"PRAGMA cache_size = -{self._cache_mib * 1024}")
            await conn.execute("PRAGMA foreign_keys = ON")
            # The page size only takes on an empty database; 4 KiB is the disk's unit.
            await conn.execute("PRAGMA page_size = 4096")
            await _enable_wal(conn)
            # FULL: a commit is durable (WAL fsynced) before anyone is answered.
            await conn.execute("PRAGMA synchronous = FULL")
            # Checkpoint less often than the default 1000 pages: fewer random writes
            # into the main file when many index pages are dirty.
            await conn.execute("PRAGMA wal_autocheckpoint = 10000")
            # Erased values must not linger in free pages (data-subject erasure).
            await conn.execute("PRAGMA secure_delete = ON")
        except BaseException as exc:
            # A half-set-up connection still owns a thread: close it, whatever failed.
            with contextlib.suppress(Exception):
                await conn.close()
            if isinstance(exc, sqlite3.Error):
                raise FailedPreconditionError(
                    "cannot open the SQLite store", reason="STORE_OPEN_FAILED"
                ) from exc
            raise
        return conn

    async def open(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            self._writer = await self._connect()
            await self._migrate(self._writer)
            self._reader = await self._connect()
            await self._reader.execute("PRAGMA query_only = ON")
        except BaseException:
            # A failed open leaves no connection (or its thread) behind.
            for conn in (self._reader, self._writer):
                if conn is not None:
                    with contextlib.suppress(sqlite3.Error):
                        await conn.close()
            self._reader = self._writer = None
            raise
        if self._inline_read_max > 0:
            self._inline = sqlite3.connect(self._path, isolation_level=None)
            # Never wait on a lock in the event loop: busy falls back to the thread.
            self._inline.execute("PRAGMA busy_timeout = 0")
            self._inline.execute(f"PRAGMA cache_size = -{self._cache_mib * 1024}")
            self._inline.execute("PRAGMA query_only = ON")
        self._tasks = [
            asyncio.create_task(
                drain(self._write_queue, self._commit_batch, _MAX_WRITE_BATCH),
                name="sqlite-writer",
            ),
            asyncio.create_task(
                drain(self._read_queue, self._answer_reads, _MAX_READ_BATCH, read_weight),
                name="sqlite-reader",
            ),
        ]

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # The writer drains what was queued before the stop marker: pending commits flush.
        self._write_queue.put_nowait(None)
        self._read_queue.put_nowait(None)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        fail_waiting(self._read_queue)
        fail_waiting(self._write_queue)
        for conn in (self._reader, self._writer):
            if conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    await conn.close()
        if self._inline is not None:
            self._inline.close()
            self._inline = None

    async def _migrate(self, conn: aiosqlite.Connection) -> None:
        known = migrations("sqlite")
        numbers = {number for number, _ in known}
        # IMMEDIATE: two processes starting together apply each migration once.
        await conn.execute("BEGIN IMMEDIATE")
        try:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version INTEGER PRIMARY KEY,"  # migration number
                " applied_at TEXT NOT NULL)"  # when it ran
            )
            applied = {
                int(r[0])
                for r in await conn.execute_fetchall("SELECT version FROM schema_migrations")
            }
            # By set, not by the highest number: a migration numbered below one already
            # applied (a branch merged later, e.g. 0005 after 0008) still runs. A number
            # this code does not ship means a newer vault owns the schema.
            if applied - numbers:
                raise FailedPreconditionError(  # noqa: TRY301 - rolled back below
                    "the store's schema is newer than this vault; upgrade the vault",
                    reason="SCHEMA_TOO_NEW",
                )
            for number, script in known:
                if number in applied:
                    continue
                for statement in _split_statements(script):
                    await conn.execute(statement)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, applied_at) "
                    "VALUES (?, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))",
                    (number,),
                )
                log.info("applied migration %d", number)
            await conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                await conn.execute("ROLLBACK")
            raise

    # -- the writer --------------------------------------------------------------

    def _submit(self, op: _Op) -> None:
        if self._closed or not self._tasks:
            raise StoreUnavailableError("the store is not open")
        self._write_queue.put_nowait(op)

    async def _commit_batch(self, batch: list[_Op]) -> None:
        conn = self._writer
        assert conn is not None  # noqa: S101 - open() ran
        inserts = [op for op in batch if isinstance(op, InsertOp)]
        generics = [op for op in batch if isinstance(op, WriteOp)]
        audits = [op for op in batch if isinstance(op, AuditOp)]
        try:
            # One thread hop for the whole transaction: an aiosqlite round trip costs
            # tens of microseconds, a SQLite statement a few. aiosqlite has no public
            # way to run a function on its thread; `_execute` is what every one of its
            # methods uses, and the version is pinned (<0.23) in pyproject.toml.
            inserted: int = await conn._execute(  # type: ignore[no-untyped-call]  # noqa: SLF001
                commit_sync,
                conn._conn,  # noqa: SLF001
                inserts,
                generics,
                audits,
            )
        except Exception as exc:  # noqa: BLE001 - every waiting caller gets UNAVAILABLE
            fail_batch(batch, exc)
            return
        answer_batch(batch, inserted, self._on_commit)

    async def _write(self, tx: Callable[[], Tx[T]], *, retry_unique: bool = False) -> T:
        del retry_unique  # one writer: no concurrent transaction to lose a race to
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._submit(WriteOp(tx, future))
        return await future

    # -- the reader --------------------------------------------------------------

    async def _answer_reads(self, batch: list[ReadOp]) -> None:
        conn = self._reader
        assert conn is not None  # noqa: S101 - open() ran
        try:
            wanted = list({t for rop in batch for t in rop.tokens})
            found: dict[str, TokenRecord] = {}
            for chunk in chunks(wanted, MAX_PARAMS):
                sql = (
                    f"SELECT {TOKEN_COLUMNS} FROM tokens "  # noqa: S608 - constant
                    f"WHERE token IN ({','.join('?' * len(chunk))})"
                )
                # execute_fetchall: one thread hop per query, not three.
                for row in await conn.execute_fetchall(sql, chunk):
                    found[row[0]] = token_from_row(row)
        except Exception as exc:  # noqa: BLE001 - answered to every waiting reader
            fail_batch(batch, exc, "read")
            return
        for rop in batch:
            if not rop.future.done():
                rop.future.set_result([found.get(t) for t in rop.tokens])

    async def _query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        conn = self._reader
        if conn is None or self._closed:
            raise StoreUnavailableError("the store is not open")
        try:
            return list(await conn.execute_fetchall(sql, params))
        except sqlite3.Error as exc:
            raise StoreUnavailableError("the store could not be read") from exc

    def _read_inline(self, tokens: Sequence[str]) -> list[TokenRecord | None]:
        assert self._inline is not None  # noqa: S101 - checked by the caller
        sql = f"SELECT {TOKEN_COLUMNS} FROM tokens WHERE token IN ({','.join('?' * len(tokens))})"  # noqa: S608
        found = {row[0]: token_from_row(row) for row in self._inline.execute(sql, tuple(tokens))}
        return [found.get(t) for t in tokens]

    # -- what is SQLite's own ----------------------------------------------------

    async def get_tokens(self, tokens: Sequence[str]) -> list[TokenRecord | None]:
        if not tokens:
            return []
        if self._closed or not self._tasks:
            raise StoreUnavailableError("the store is not open")
        if len(tokens) <= self._inline_read_max and self._inline is not None:
            try:
                return self._read_inline(tokens)
            except sqlite3.OperationalError:
                pass  # busy (a checkpoint or recovery): wait on the reader thread instead
            except sqlite3.Error as exc:
                log.error("store read failed: %s", type(exc).__name__)
                raise StoreUnavailableError("the store could not be read") from None
        return await queued_read(self._read_queue, tokens)

    async def tokens_to_rewrap(self, primary: int, after: int, limit: int) -> list[RewrapRow]:
        # Through tokens_key_version: only the older versions' rows are visited.
        found = await self._query(
            f"SELECT id, {TOKEN_COLUMNS} FROM tokens "  # noqa: S608 - constant
            "WHERE key_version IN (SELECT version FROM key_versions WHERE version <> ?) "
            "AND id > ? ORDER BY id LIMIT ?",
            (primary, after, limit),
        )
        return [RewrapRow(int(r[0]), token_from_row(r[1:])) for r in found]

    async def rewrap_tokens(self, updates: Sequence[RewrapUpdate], encryptions: int) -> int:
        return await self._write(lambda: _rewrap(updates, encryptions))

    async def purge_retained(
        self, tenant: str, kind: int, created_before: float, now: float, limit: int
    ) -> int:
        # Candidates are found on the reader, a window of ids at a time (a scan, but of
        # the old prefix only and never inside the write lock); the writer deletes them
        # re-checking every condition, so a row held or changed meanwhile stays.
        boundary = await self._age_boundary(created_before)
        purged = 0
        for after in range(0, boundary, _RETENTION_WINDOW):
            due = await self._query(
                "SELECT id FROM tokens WHERE id > ? AND id <= ? AND tenant = ? AND kind = ? "  # noqa: S608 - constant
                f"AND created_at < ? AND NOT ({HELD}) ORDER BY id",
                (after, min(after + _RETENTION_WINDOW, boundary), tenant, kind, created_before),
            )
            for chunk in chunks([int(r[0]) for r in due], limit):
                delete = functools.partial(_delete_retained, tenant, kind, created_before, now)
                purged += await self._write(functools.partial(delete, chunk))
        return purged
