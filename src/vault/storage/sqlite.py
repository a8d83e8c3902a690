"""The embedded store: SQLite through aiosqlite, WAL, synchronous=FULL, group commit.

One writer task owns the write connection and drains a queue: every write waiting when
it wakes goes into one transaction and one fsync (group commit), and each caller is
answered only once that transaction is durable. One reader task owns a read connection
and answers every lookup waiting when it wakes with one query. Sharing one aiosqlite
connection between committing coroutines raises InterfaceError; owning it avoids that,
and the batching is where the throughput comes from (an aiosqlite round trip costs
tens of microseconds, a SQLite row a few).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from vault.errors import FailedPreconditionError, StoreUnavailableError
from vault.storage.base import (
    AUDIT_GENESIS_MAC,
    AuditRow,
    AuditSeal,
    CallerRow,
    CommitObserver,
    EraseOutcome,
    InsertOutcome,
    InsertStatus,
    RetentionCounts,
    RetireOutcome,
    RewrapProgressRow,
    RewrapRow,
    RewrapUpdate,
    ShareSchemeRow,
    TokenRecord,
    TokenUpdate,
    UpdateStatus,
    WrappedKeyKind,
)
from vault.storage.sql.audit_chain import chain_audits
from vault.storage.sql.codecs import (
    audit_from_row,
    caller_exists,
    caller_params,
    chunks,
    retention_counts,
    token_from_row,
    token_params,
)
from vault.storage.sql.columns import (
    AUDIT_COLUMNS,
    CALLER_COLUMNS,
    HELD,
    P_PROGRESS_COLUMNS,
    PROGRESS_COLUMNS,
    T_COLUMNS,
    TOKEN_COLUMNS,
    WRAPPED_KEY_TABLES,
)
from vault.storage.sql.dialect import SQLITE
from vault.storage.sql.reads import SqlReads
from vault.storage.sql.resolution import InsertResolver
from vault.storage.sql.routes import SqlRoutes, Statement
from vault.storage.sql.schema import migrations

__all__ = ["SqliteStore", "migrations"]

log = logging.getLogger(__name__)

T = TypeVar("T")

# Most host parameters per statement we use (SQLite's limit is 32766).
_MAX_PARAMS = 900
# Most lookups answered by one read query.
_MAX_READ_BATCH = 512
# Most waiting writes coalesced into one transaction.
_MAX_WRITE_BATCH = 256
# Row ids the retention purge scans per read query (bounded work per query).
_RETENTION_WINDOW = 50_000

_INSERTED = InsertOutcome(InsertStatus.INSERTED)
_INSERT_TOKEN = SQLITE.insert("tokens", TOKEN_COLUMNS)


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


@dataclass(slots=True)
class _InsertOp:
    records: Sequence[TokenRecord]
    now: float
    encryptions: Mapping[int, int]
    future: asyncio.Future[list[InsertOutcome]]
    outcomes: list[InsertOutcome] = field(default_factory=list)


@dataclass(slots=True)
class _GenericOp:
    """Any other write: runs in its own savepoint inside the group transaction."""

    apply: Callable[[sqlite3.Connection], Any]
    future: asyncio.Future[Any]
    result: Any = None
    error: BaseException | None = None


@dataclass(slots=True)
class _AuditOp:
    """Audit records to chain on; every waiting one goes into the group's transaction."""

    rows: Sequence[AuditRow]
    seal: AuditSeal
    future: asyncio.Future[list[AuditRow]]
    stored: list[AuditRow] = field(default_factory=list)
    error: BaseException | None = None


_Op = _InsertOp | _GenericOp | _AuditOp

_INSERT_AUDIT = SQLITE.insert("audit_log", AUDIT_COLUMNS)
_INSERT_CALLER = SQLITE.insert("callers", CALLER_COLUMNS)
_PUT_AUDIT_HEAD = SQLITE.upsert("audit_head", "id, seq, mac", "id")


def _apply_audits(conn: sqlite3.Connection, ops: list[_AuditOp]) -> None:
    """Chain every waiting op's rows onto the newest stored record, in one savepoint.

    The previous MAC is read here, inside the write transaction (BEGIN IMMEDIATE holds
    the write lock), so vault processes sharing the file extend one linear chain.
    """
    conn.execute("SAVEPOINT audit")
    try:
        last = conn.execute("SELECT seq, mac FROM audit_log ORDER BY seq DESC LIMIT 1").fetchone()
        seq, prev = (int(last[0]), bytes(last[1])) if last else (0, AUDIT_GENESIS_MAC)
        chain = chain_audits(seq, prev, [(op.rows, op.seal) for op in ops])
        conn.executemany(_INSERT_AUDIT, chain.params)
        conn.execute(_PUT_AUDIT_HEAD, (1, chain.head_seq, chain.head_mac))
    except Exception as exc:  # noqa: BLE001 - handed to every audit op's caller
        conn.execute("ROLLBACK TO audit")
        conn.execute("RELEASE audit")
        for op in ops:
            op.stored = []
            op.error = exc
        return
    conn.execute("RELEASE audit")
    for op, stored in zip(ops, chain.stored, strict=True):
        op.stored = stored


def _commit_sync(
    conn: sqlite3.Connection,
    inserts: list[_InsertOp],
    generics: list[_GenericOp],
    audits: list[_AuditOp],
) -> int:
    """One group commit, on the connection's thread. Returns the rows inserted."""
    inserted = 0
    conn.execute("BEGIN IMMEDIATE")
    try:
        if inserts:
            inserted = _apply_inserts(conn, inserts)
        if audits:
            _apply_audits(conn, audits)
        for gop in generics:
            conn.execute("SAVEPOINT op")
            try:
                gop.result = gop.apply(conn)
            except Exception as exc:  # noqa: BLE001 - handed to that op's caller
                gop.error = exc
                conn.execute("ROLLBACK TO op")
            conn.execute("RELEASE op")
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise
    return inserted


def _insert_plain(conn: sqlite3.Connection, ops: list[_InsertOp]) -> bool:
    """The common case without a lookup first: no record is deterministic or carries a
    request id, so only a taken token can stop an insert, and the unique index says
    so. False (and nothing written) when it does; the caller then resolves."""
    conn.execute("SAVEPOINT plain")
    try:
        conn.executemany(_INSERT_TOKEN, [token_params(r) for op in ops for r in op.records])
    except sqlite3.IntegrityError:
        conn.execute("ROLLBACK TO plain")
        conn.execute("RELEASE plain")
        return False
    conn.execute("RELEASE plain")
    for op in ops:
        op.outcomes = [_INSERTED] * len(op.records)
    return True


def _apply_inserts(conn: sqlite3.Connection, ops: list[_InsertOp]) -> int:
    """Resolve collisions, deterministic and idempotent hits, then insert the rest."""
    now = max(op.now for op in ops)
    records = [r for op in ops for r in op.records]
    plain = not any(r.deterministic or r.request_id for r in records)
    if plain and _insert_plain(conn, ops):
        _count_encryptions(conn, ops)
        return len(records)
    # Random tokens carry 160 bits: only PAN-shaped tokens can realistically collide,
    # but all are checked, also against rows that expired and wait for the purge.
    existing, reserved = _existing_for(conn, records)
    # Expired rows of a subject under legal hold are kept, and count as live.
    held = _held_rows(conn, {i: r for i, r in existing.items() if not r.live(now)})
    expired_ids = [i for i, rec in existing.items() if not rec.live(now) and i not in held]
    for chunk in chunks(expired_ids, _MAX_PARAMS):
        # Dead rows: free their token, deterministic key and request id for reuse.
        marks = ",".join("?" * len(chunk))
        conn.execute(f"DELETE FROM tokens WHERE id IN ({marks})", chunk)  # noqa: S608
    resolver = InsertResolver([rec for i, rec in existing.items() if rec.live(now) or i in held])
    for tenant, request_id, request_hash, rowid in reserved:
        if existing[rowid].live(now) or rowid in held:
            resolver.by_request[(tenant, request_id)] = (request_hash, existing[rowid])
    for op in ops:
        op.outcomes = resolver.resolve(op.records)
    if resolver.to_insert:
        conn.executemany(_INSERT_TOKEN, [token_params(r) for r in resolver.to_insert])
    if resolver.reservations:
        conn.executemany(
            "INSERT INTO request_ids (tenant, request_id, request_hash, token) VALUES (?, ?, ?, ?)",
            resolver.reservations,
        )
    _count_encryptions(conn, ops)
    return len(resolver.to_insert)


def _held_rows(conn: sqlite3.Connection, rows: Mapping[int, TokenRecord]) -> set[int]:
    """Which of the rows (by row id) belong to a subject under legal hold."""
    wanted = list({(r.tenant, r.subject_ref) for r in rows.values() if r.subject_ref})
    held: set[tuple[str, bytes]] = set()
    for chunk in chunks(wanted, _MAX_PARAMS // 2):
        sql = (
            "SELECT tenant, subject_ref FROM subject_holds WHERE (tenant, subject_ref) IN "  # noqa: S608 - placeholders only
            f"(VALUES {','.join('(?,?)' for _ in chunk)})"
        )
        params = [p for pair in chunk for p in pair]
        held |= {(t, bytes(ref)) for t, ref in conn.execute(sql, params)}
    return {i for i, r in rows.items() if (r.tenant, r.subject_ref) in held}


def _count_encryptions(conn: sqlite3.Connection, ops: list[_InsertOp]) -> None:
    """Add the calls' encryptions (inserted or not) to the key versions' counters."""
    usage: dict[int, int] = {}
    for op in ops:
        for version, count in op.encryptions.items():
            usage[version] = usage.get(version, 0) + count
    if usage:
        conn.executemany(
            "UPDATE key_versions SET encryptions = encryptions + ? WHERE version = ?",
            [(count, version) for version, count in usage.items()],
        )


def _existing_for(
    conn: sqlite3.Connection, records: Sequence[TokenRecord]
) -> tuple[dict[int, TokenRecord], list[tuple[str, str, bytes, int]]]:
    """Stored rows (by row id) that share a token, deterministic key or request id with
    records, and the request ids reserved by deterministic hits (tenant, id, hash, row)."""
    found: dict[int, TokenRecord] = {}
    reserved: list[tuple[str, str, bytes, int]] = []
    select = f"SELECT id, {TOKEN_COLUMNS} FROM tokens WHERE "  # noqa: S608 - constant

    def collect(sql: str, params: Sequence[Any]) -> None:
        for row in conn.execute(sql, params):
            found[row[0]] = token_from_row(row[1:])

    tokens = [r.token for r in records]
    for chunk in chunks(tokens, _MAX_PARAMS):
        collect(select + f"token IN ({','.join('?' * len(chunk))})", chunk)
    det = [r for r in records if r.deterministic]
    for det_chunk in chunks(det, _MAX_PARAMS // 4):
        values = ",".join("(?,?,?,?)" for _ in det_chunk)
        params = [p for r in det_chunk for p in (r.tenant, r.kind, r.token_format, r.fingerprint)]
        collect(
            select + "deterministic = 1 AND (tenant, kind, token_format, fingerprint) "
            f"IN (VALUES {values})",
            params,
        )
    req = [r for r in records if r.request_id]
    for req_chunk in chunks(req, _MAX_PARAMS // 2):
        values = ",".join("(?,?)" for _ in req_chunk)
        req_params = [p for r in req_chunk for p in (r.tenant, r.request_id)]
        collect(
            select + f"request_id IS NOT NULL AND (tenant, request_id) IN (VALUES {values})",
            req_params,
        )
        sql = (
            f"SELECT r.tenant, r.request_id, r.request_hash, t.id, {T_COLUMNS} "  # noqa: S608
            "FROM request_ids r JOIN tokens t ON t.token = r.token "
            f"WHERE (r.tenant, r.request_id) IN (VALUES {values})"
        )
        for row in conn.execute(sql, req_params):
            found[row[3]] = token_from_row(row[4:])
            reserved.append((row[0], row[1], row[2], row[3]))
    return found, reserved


@dataclass(slots=True)
class _ReadOp:
    tokens: Sequence[str]
    future: asyncio.Future[list[TokenRecord | None]]


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


class SqliteStore(SqlReads, SqlRoutes):
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
        self._read_queue: asyncio.Queue[_ReadOp | None] = asyncio.Queue()
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
            conn = await aiosqlite.connect(self._path, isolation_level=None)
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
            asyncio.create_task(self._write_loop(), name="sqlite-writer"),
            asyncio.create_task(self._read_loop(), name="sqlite-reader"),
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
        for conn in (self._reader, self._writer):
            if conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    await conn.close()
        if self._inline is not None:
            self._inline.close()
            self._inline = None

    def _read_inline(self, tokens: Sequence[str]) -> list[TokenRecord | None]:
        assert self._inline is not None  # noqa: S101 - checked by the caller
        sql = f"SELECT {TOKEN_COLUMNS} FROM tokens WHERE token IN ({','.join('?' * len(tokens))})"  # noqa: S608
        rows = {row[0]: token_from_row(row) for row in self._inline.execute(sql, tuple(tokens))}
        return [rows.get(t) for t in tokens]

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

    async def _write_loop(self) -> None:
        stopping = False
        while not stopping:
            op = await self._write_queue.get()
            if op is None:
                break
            batch: list[_Op] = [op]
            while len(batch) < _MAX_WRITE_BATCH and not self._write_queue.empty():
                nxt = self._write_queue.get_nowait()
                if nxt is None:
                    stopping = True
                    break
                batch.append(nxt)
            await self._commit_batch(batch)

    async def _commit_batch(self, batch: list[_Op]) -> None:
        conn = self._writer
        assert conn is not None  # noqa: S101 - open() ran
        inserts = [op for op in batch if isinstance(op, _InsertOp)]
        generics = [op for op in batch if isinstance(op, _GenericOp)]
        audits = [op for op in batch if isinstance(op, _AuditOp)]
        try:
            # One thread hop for the whole transaction: an aiosqlite round trip costs
            # tens of microseconds, a SQLite statement a few. aiosqlite has no public
            # way to run a function on its thread; `_execute` is what every one of its
            # methods uses, and the version is pinned (<0.23) in pyproject.toml.
            inserted: int = await conn._execute(  # type: ignore[no-untyped-call]  # noqa: SLF001
                _commit_sync,
                conn._conn,  # noqa: SLF001
                inserts,
                generics,
                audits,
            )
        except Exception as exc:  # noqa: BLE001 - every waiting caller gets UNAVAILABLE
            log.error("store commit failed: %s", type(exc).__name__)
            err = StoreUnavailableError("the store could not commit")
            for op in batch:
                if not op.future.done():
                    op.future.set_exception(err)
            return
        if self._on_commit is not None and inserted:
            try:
                self._on_commit(inserted)
            except Exception as exc:  # noqa: BLE001 - a metrics hook must not stop commits
                log.warning("commit observer failed: %s", type(exc).__name__)
        for iop in inserts:
            if not iop.future.done():
                iop.future.set_result(iop.outcomes)
        for gop in generics:
            if gop.future.done():
                continue
            if gop.error is not None:
                gop.future.set_exception(gop.error)
            else:
                gop.future.set_result(gop.result)
        for aop in audits:
            if aop.future.done():
                continue
            if aop.error is not None:
                log.error("audit append failed: %s", type(aop.error).__name__)
                aop.future.set_exception(StoreUnavailableError("the store could not commit"))
            else:
                aop.future.set_result(aop.stored)

    async def _write(self, apply: Callable[[sqlite3.Connection], T]) -> T:
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._submit(_GenericOp(apply, future))
        return await future

    # -- the reader --------------------------------------------------------------

    async def _read_loop(self) -> None:
        conn = self._reader
        assert conn is not None  # noqa: S101 - open() ran
        stopping = False
        while not stopping:
            op = await self._read_queue.get()
            if op is None:
                break
            batch = [op]
            count = len(op.tokens)
            while count < _MAX_READ_BATCH and not self._read_queue.empty():
                nxt = self._read_queue.get_nowait()
                if nxt is None:
                    stopping = True
                    break
                batch.append(nxt)
                count += len(nxt.tokens)
            try:
                wanted = list({t for rop in batch for t in rop.tokens})
                rows: dict[str, TokenRecord] = {}
                for chunk in chunks(wanted, _MAX_PARAMS):
                    sql = (
                        f"SELECT {TOKEN_COLUMNS} FROM tokens "  # noqa: S608 - constant
                        f"WHERE token IN ({','.join('?' * len(chunk))})"
                    )
                    # execute_fetchall: one thread hop per query, not three.
                    for row in await conn.execute_fetchall(sql, chunk):
                        rows[row[0]] = token_from_row(row)
            except Exception as exc:  # noqa: BLE001 - answered to every waiting reader
                log.error("store read failed: %s", type(exc).__name__)
                err = StoreUnavailableError("the store could not be read")
                for rop in batch:
                    if not rop.future.done():
                        rop.future.set_exception(err)
                continue
            for rop in batch:
                if not rop.future.done():
                    rop.future.set_result([rows.get(t) for t in rop.tokens])
        while not self._read_queue.empty():
            left = self._read_queue.get_nowait()
            if left is not None and not left.future.done():
                left.future.set_exception(StoreUnavailableError("the store is closing"))

    async def _query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        conn = self._reader
        if conn is None or self._closed:
            raise StoreUnavailableError("the store is not open")
        try:
            return list(await conn.execute_fetchall(sql, params))
        except sqlite3.Error as exc:
            raise StoreUnavailableError("the store could not be read") from exc

    # -- Store protocol ----------------------------------------------------------

    async def insert_tokens(
        self, records: Sequence[TokenRecord], now: float, encryptions: Mapping[int, int]
    ) -> list[InsertOutcome]:
        if not records:
            return []
        future: asyncio.Future[list[InsertOutcome]] = asyncio.get_running_loop().create_future()
        self._submit(_InsertOp(records, now, encryptions, future))
        return await future

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
        future: asyncio.Future[list[TokenRecord | None]] = (
            asyncio.get_running_loop().create_future()
        )
        self._read_queue.put_nowait(_ReadOp(tokens, future))
        return await future

    async def delete_token(self, tenant: str, token: str) -> bool:
        def apply(conn: sqlite3.Connection) -> bool:
            cur = conn.execute("DELETE FROM tokens WHERE token = ? AND tenant = ?", (token, tenant))
            return cur.rowcount > 0

        return await self._write(apply)

    async def purge_expired(self, now: float, limit: int) -> int:
        def apply(conn: sqlite3.Connection) -> int:
            cur = conn.execute(
                "DELETE FROM tokens WHERE id IN (SELECT id FROM tokens "  # noqa: S608 - constant
                f"WHERE expires_at IS NOT NULL AND expires_at <= ? AND NOT ({HELD}) LIMIT ?)",
                (now, limit),
            )
            return cur.rowcount

        return await self._write(apply)

    async def add_key_version(
        self, wrapped_key: bytes, kek_id: str, created_at: float, *, primary: bool
    ) -> int:
        def apply(conn: sqlite3.Connection) -> int:
            row = conn.execute("SELECT coalesce(max(version), 0) + 1 FROM key_versions").fetchone()
            version = int(row[0]) if row else 1
            if primary:
                conn.execute("UPDATE key_versions SET state = 'active' WHERE state = 'primary'")
            conn.execute(
                "INSERT INTO key_versions (version, state, wrapped_key, kek_id, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (version, "primary" if primary else "active", wrapped_key, kek_id, created_at),
            )
            return version

        return await self._write(apply)

    async def add_next_key_version(
        self, version: int, wrapped_key: bytes, kek_id: str, created_at: float
    ) -> bool:
        def apply(conn: sqlite3.Connection) -> bool:
            row = conn.execute("SELECT coalesce(max(version), 0) + 1 FROM key_versions").fetchone()
            if row is None or int(row[0]) != version:
                return False
            conn.execute("UPDATE key_versions SET state = 'active' WHERE state = 'primary'")
            conn.execute(
                "INSERT INTO key_versions (version, state, wrapped_key, kek_id, created_at) "
                "VALUES (?, 'primary', ?, ?, ?)",
                (version, wrapped_key, kek_id, created_at),
            )
            return True

        return await self._write(apply)

    async def tokens_to_rewrap(self, primary: int, after: int, limit: int) -> list[RewrapRow]:
        # Through tokens_key_version: only the older versions' rows are visited.
        rows = await self._query(
            f"SELECT id, {TOKEN_COLUMNS} FROM tokens "  # noqa: S608 - constant
            "WHERE key_version IN (SELECT version FROM key_versions WHERE version <> ?) "
            "AND id > ? ORDER BY id LIMIT ?",
            (primary, after, limit),
        )
        return [RewrapRow(int(r[0]), token_from_row(r[1:])) for r in rows]

    async def rewrap_tokens(self, updates: Sequence[RewrapUpdate], encryptions: int) -> int:
        def apply(conn: sqlite3.Connection) -> int:
            done = 0
            for u in updates:
                cur = conn.execute(
                    "UPDATE tokens SET ciphertext = ?, key_version = ? "
                    "WHERE token = ? AND key_version = ? AND ciphertext = ?",
                    (u.new_ciphertext, u.new_version, u.token, u.old_version, u.old_ciphertext),
                )
                done += cur.rowcount
            if updates and encryptions:
                conn.execute(
                    "UPDATE key_versions SET encryptions = encryptions + ? WHERE version = ?",
                    (encryptions, updates[0].new_version),
                )
            return done

        return await self._write(apply)

    async def take_rewrap_lease(self, holder: str, now: float, expires_at: float) -> bool:
        def apply(conn: sqlite3.Connection) -> bool:
            conn.execute(
                "INSERT INTO rewrap_lease (id, holder, expires_at) VALUES (1, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET holder = excluded.holder, "
                "expires_at = excluded.expires_at "
                "WHERE rewrap_lease.holder = excluded.holder OR rewrap_lease.expires_at <= ?",
                (holder, expires_at, now),
            )
            row = conn.execute("SELECT holder FROM rewrap_lease WHERE id = 1").fetchone()
            return row is not None and row[0] == holder

        return await self._write(apply)

    async def release_rewrap_lease(self, holder: str) -> None:
        def apply(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM rewrap_lease WHERE id = 1 AND holder = ?", (holder,))

        await self._write(apply)

    async def put_rewrap_progress(self, progress: RewrapProgressRow) -> None:
        p = progress

        def apply(conn: sqlite3.Connection) -> None:
            conn.execute(
                f"INSERT OR REPLACE INTO rewrap_progress (id, {PROGRESS_COLUMNS}) "  # noqa: S608 - constant
                "VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    p.holder,
                    p.primary_version,
                    p.batch_size,
                    p.rate,
                    p.started_at,
                    p.last_batch_at,
                    p.finished_at,
                    p.batches,
                    p.rewrapped,
                    p.skipped,
                    p.failed,
                    p.remaining,
                ),
            )

        await self._write(apply)

    async def rewrap_progress(self) -> RewrapProgressRow | None:
        rows = await self._query(
            f"SELECT {P_PROGRESS_COLUMNS}, l.expires_at FROM rewrap_progress p "  # noqa: S608 - constant
            "LEFT JOIN rewrap_lease l ON l.id = 1 AND l.holder = p.holder WHERE p.id = 1"
        )
        return RewrapProgressRow(*rows[0]) if rows else None

    async def retire_key_version(self, version: int) -> RetireOutcome:
        def apply(conn: sqlite3.Connection) -> RetireOutcome:
            row = conn.execute(
                "SELECT state FROM key_versions WHERE version = ?", (version,)
            ).fetchone()
            if row is None:
                return RetireOutcome.UNKNOWN
            if row[0] == "primary":
                return RetireOutcome.PRIMARY
            if row[0] == "retired":
                return RetireOutcome.ALREADY_RETIRED
            # Inside the write transaction: no record can be added under it meanwhile.
            used = conn.execute(
                "SELECT 1 FROM tokens WHERE key_version = ? LIMIT 1", (version,)
            ).fetchone()
            if used is not None:
                return RetireOutcome.IN_USE
            conn.execute(
                "UPDATE key_versions SET state = 'retired', wrapped_key = NULL WHERE version = ?",
                (version,),
            )
            return RetireOutcome.RETIRED

        return await self._write(apply)

    # Wrapped keys kept by name (fingerprint keys by tenant, service keys by name): read,
    # and put where the first writer wins. `table` and `column` are constants of ours.

    async def _put_wrapped_key(
        self, table: str, column: str, name: str, wrapped_key: bytes, kek_id: str, created_at: float
    ) -> bytes:
        def apply(conn: sqlite3.Connection) -> bytes:
            conn.execute(
                f"INSERT INTO {table} ({column}, wrapped_key, kek_id, created_at) "  # noqa: S608
                f"VALUES (?, ?, ?, ?) ON CONFLICT ({column}) DO NOTHING",
                (name, wrapped_key, kek_id, created_at),
            )
            row = conn.execute(
                f"SELECT wrapped_key FROM {table} WHERE {column} = ?",  # noqa: S608
                (name,),
            ).fetchone()
            assert row is not None  # noqa: S101 - inserted or present in this transaction
            return bytes(row[0])

        return await self._write(apply)

    async def put_fingerprint_key(
        self, tenant: str, wrapped_key: bytes, kek_id: str, created_at: float
    ) -> bytes:
        return await self._put_wrapped_key(
            "fingerprint_keys", "tenant", tenant, wrapped_key, kek_id, created_at
        )

    async def replace_wrapped_key(
        self, kind: WrappedKeyKind, name: str, old: bytes, new: bytes, kek_id: str
    ) -> bool:
        table, column = WRAPPED_KEY_TABLES[kind]
        key: object = int(name) if kind is WrappedKeyKind.DATA_KEY else name

        def apply(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                f"UPDATE {table} SET wrapped_key = ?, kek_id = ? "  # noqa: S608 - constants
                f"WHERE {column} = ? AND wrapped_key = ?",
                (new, kek_id, key, old),
            )
            return cur.rowcount == 1

        return await self._write(apply)

    async def put_share_scheme(self, scheme: ShareSchemeRow) -> bool:
        def apply(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "INSERT INTO kek_shares "
                "(id, kek_id, threshold, share_count, verifiers, created_at) "
                "VALUES (1, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                (
                    scheme.kek_id,
                    scheme.threshold,
                    scheme.share_count,
                    b"".join(scheme.verifiers),
                    scheme.created_at,
                ),
            )
            return cur.rowcount == 1

        return await self._write(apply)

    async def _statements(self, statements: Sequence[Statement]) -> list[int]:
        """The statements in one savepoint of the group transaction (SqlRoutes)."""

        def apply(conn: sqlite3.Connection) -> list[int]:
            return [conn.execute(sql, params).rowcount for sql, params in statements]

        return await self._write(apply)

    async def add_caller(self, caller: CallerRow) -> None:
        def apply(conn: sqlite3.Connection) -> None:
            try:
                conn.execute(_INSERT_CALLER, caller_params(caller))
            except sqlite3.IntegrityError:
                raise caller_exists() from None

        await self._write(apply)

    async def put_service_key(
        self, name: str, wrapped_key: bytes, kek_id: str, created_at: float
    ) -> bytes:
        return await self._put_wrapped_key(
            "service_keys", "name", name, wrapped_key, kek_id, created_at
        )

    async def append_audit(self, rows: Sequence[AuditRow], seal: AuditSeal) -> list[AuditRow]:
        if not rows:
            return []
        future: asyncio.Future[list[AuditRow]] = asyncio.get_running_loop().create_future()
        self._submit(_AuditOp(rows, seal, future))
        return await future

    async def revoke_caller(self, name: str, revoked_at: float) -> bool:
        def apply(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "UPDATE callers SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL",
                (revoked_at, name),
            )
            return cur.rowcount > 0

        return await self._write(apply)

    async def take_job_lease(self, job: str, holder: str, now: float, expires_at: float) -> bool:
        def apply(conn: sqlite3.Connection) -> bool:
            conn.execute(
                "INSERT INTO job_leases (job, holder, expires_at) VALUES (?, ?, ?) "
                "ON CONFLICT (job) DO UPDATE SET holder = excluded.holder, "
                "expires_at = excluded.expires_at "
                "WHERE job_leases.holder = excluded.holder OR job_leases.expires_at <= ?",
                (job, holder, expires_at, now),
            )
            row = conn.execute("SELECT holder FROM job_leases WHERE job = ?", (job,)).fetchone()
            return row is not None and row[0] == holder

        return await self._write(apply)

    async def release_job_lease(self, job: str, holder: str) -> None:
        def apply(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM job_leases WHERE job = ? AND holder = ?", (job, holder))

        await self._write(apply)

    # -- data subjects -------------------------------------------------------------

    async def erase_subject(self, tenant: str, subject_ref: bytes) -> EraseOutcome:
        def apply(conn: sqlite3.Connection) -> EraseOutcome:
            held = conn.execute(
                "SELECT 1 FROM subject_holds WHERE tenant = ? AND subject_ref = ?",
                (tenant, subject_ref),
            ).fetchone()
            if held is not None:
                return EraseOutcome(held=True, erased=0)
            # secure_delete is on: the rows' bytes are overwritten, not left in free pages.
            cur = conn.execute(
                "DELETE FROM tokens WHERE tenant = ? AND subject_ref = ?", (tenant, subject_ref)
            )
            return EraseOutcome(held=False, erased=cur.rowcount)

        return await self._write(apply)

    async def set_subject_hold(
        self, tenant: str, subject_ref: bytes, reason: str, now: float
    ) -> bool:
        def apply(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "INSERT INTO subject_holds (tenant, subject_ref, reason, held_at) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (tenant, subject_ref) DO NOTHING",
                (tenant, subject_ref, reason, now),
            )
            return cur.rowcount > 0

        return await self._write(apply)

    async def release_subject_hold(self, tenant: str, subject_ref: bytes) -> bool:
        def apply(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "DELETE FROM subject_holds WHERE tenant = ? AND subject_ref = ?",
                (tenant, subject_ref),
            )
            return cur.rowcount > 0

        return await self._write(apply)

    async def update_token(self, update: TokenUpdate) -> UpdateStatus:
        u = update

        def apply(conn: sqlite3.Connection) -> UpdateStatus:
            row = conn.execute(
                f"SELECT id, {TOKEN_COLUMNS} FROM tokens "  # noqa: S608 - constant
                "WHERE token = ? AND tenant = ? AND key_version = ? AND ciphertext = ?",
                (u.token, u.tenant, u.old_version, u.old_ciphertext),
            ).fetchone()
            if row is None:
                return UpdateStatus.CHANGED
            rec = token_from_row(row[1:])
            if rec.deterministic:
                other = conn.execute(
                    f"SELECT id, {TOKEN_COLUMNS} FROM tokens WHERE deterministic = 1 "  # noqa: S608 - constant
                    "AND tenant = ? AND kind = ? AND token_format = ? AND fingerprint = ? "
                    "AND id <> ?",
                    (rec.tenant, rec.kind, rec.token_format, u.new_fingerprint, row[0]),
                ).fetchone()
                if other is not None:
                    found = {int(other[0]): token_from_row(other[1:])}
                    if found[other[0]].live(u.now) or _held_rows(conn, found):
                        return UpdateStatus.DETERMINISTIC_EXISTS
                    # Expired and unheld: its deterministic key is free again.
                    conn.execute("DELETE FROM tokens WHERE id = ?", (other[0],))
            conn.execute(
                "UPDATE tokens SET ciphertext = ?, key_version = ?, fingerprint = ? WHERE id = ?",
                (u.new_ciphertext, u.new_version, u.new_fingerprint, row[0]),
            )
            conn.execute(
                "UPDATE key_versions SET encryptions = encryptions + 1 WHERE version = ?",
                (u.new_version,),
            )
            return UpdateStatus.UPDATED

        return await self._write(apply)

    async def audit_records_for_tokens(
        self, tenant: str, action: str, tokens: Sequence[str]
    ) -> list[AuditRow]:
        found: dict[int, AuditRow] = {}
        for chunk in chunks(list(dict.fromkeys(tokens)), _MAX_PARAMS):
            rows = await self._query(
                f"SELECT {AUDIT_COLUMNS} FROM audit_log "  # noqa: S608 - constant
                "WHERE tenant = ? AND action = ? AND EXISTS (SELECT 1 FROM json_each("
                f"audit_log.tokens) WHERE json_each.value IN ({','.join('?' * len(chunk))}))",
                (tenant, action, *chunk),
            )
            for row in rows:
                found[int(row[0])] = audit_from_row(row)
        return [found[seq] for seq in sorted(found)]

    # -- retention -----------------------------------------------------------------

    async def set_retention_policy(
        self, tenant: str, kind: int, max_age: float, now: float
    ) -> None:
        def apply(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO retention_policies (tenant, kind, max_age, set_at) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (tenant, kind) DO UPDATE SET "
                "max_age = excluded.max_age, set_at = excluded.set_at",
                (tenant, kind, max_age, now),
            )

        await self._write(apply)

    async def clear_retention_policy(self, tenant: str, kind: int) -> bool:
        def apply(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "DELETE FROM retention_policies WHERE tenant = ? AND kind = ?", (tenant, kind)
            )
            return cur.rowcount > 0

        return await self._write(apply)

    async def _age_boundary(self, created_before: float) -> int:
        """The last row id created before ``created_before``, by binary search over the
        rowid: rows are inserted in time order, so created_at grows with id. A row
        whose clock ran behind its neighbours' may fall past the boundary; it is found
        by a later run, once the boundary has moved past it."""
        first = await self._query("SELECT min(id), max(id) FROM tokens")
        lo, hi = (first[0][0] or 0, first[0][1] or 0) if first else (0, 0)
        if not hi:
            return 0
        oldest = await self._query("SELECT created_at FROM tokens WHERE id = ?", (lo,))
        if not oldest or oldest[0][0] >= created_before:
            return 0
        while lo < hi:
            mid = (lo + hi + 1) // 2
            row = await self._query(
                "SELECT id, created_at FROM tokens WHERE id >= ? ORDER BY id LIMIT 1", (mid,)
            )
            if row and row[0][1] < created_before:
                lo = int(row[0][0])
            else:
                hi = mid - 1
        return lo

    async def purge_retained(
        self, tenant: str, kind: int, created_before: float, now: float, limit: int
    ) -> int:
        # Candidates are found on the reader, a window of ids at a time (a scan, but of
        # the old prefix only and never inside the write lock); the writer deletes them
        # re-checking every condition, so a row held or changed meanwhile stays.
        boundary = await self._age_boundary(created_before)
        purged = 0
        for after in range(0, boundary, _RETENTION_WINDOW):
            rows = await self._query(
                "SELECT id FROM tokens WHERE id > ? AND id <= ? AND tenant = ? AND kind = ? "  # noqa: S608 - constant
                f"AND created_at < ? AND NOT ({HELD}) ORDER BY id",
                (after, min(after + _RETENTION_WINDOW, boundary), tenant, kind, created_before),
            )
            for chunk in chunks([int(r[0]) for r in rows], limit):
                purged += await self._delete_retained(tenant, kind, created_before, now, chunk)
        return purged

    async def _delete_retained(
        self, tenant: str, kind: int, created_before: float, now: float, ids: Sequence[int]
    ) -> int:
        def apply(conn: sqlite3.Connection) -> int:
            purged = 0
            for chunk in chunks(ids, _MAX_PARAMS):
                cur = conn.execute(
                    f"DELETE FROM tokens WHERE id IN ({','.join('?' * len(chunk))}) "  # noqa: S608 - placeholders only
                    f"AND tenant = ? AND kind = ? AND created_at < ? AND NOT ({HELD})",
                    (*chunk, tenant, kind, created_before),
                )
                purged += cur.rowcount
            if purged:
                conn.execute(
                    "INSERT INTO retention_purges (tenant, kind, purged, last_purge_at) "
                    "VALUES (?, ?, ?, ?) ON CONFLICT (tenant, kind) DO UPDATE SET "
                    "purged = purged + excluded.purged, last_purge_at = excluded.last_purge_at",
                    (tenant, kind, purged, now),
                )
            return purged

        return await self._write(apply)

    async def retention_counts(
        self, tenant: str, kind: int, created_before: float
    ) -> RetentionCounts:
        rows = await self._query(
            f"SELECT ({HELD}) AS held, count(*) FROM tokens "  # noqa: S608 - constant
            "WHERE id <= ? AND tenant = ? AND kind = ? AND created_at < ? GROUP BY held",
            (await self._age_boundary(created_before), tenant, kind, created_before),
        )
        return retention_counts(rows)
