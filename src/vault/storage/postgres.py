"""The shared store: PostgreSQL through asyncpg, for many vault replicas on one database.

Writes: a few writer tasks drain the insert queue, one more the audit queue; every
write waiting when a writer wakes goes into one transaction on one pooled connection
(group commit), and each caller is answered only once COMMIT has returned
(synchronous_commit, the server's default, makes that durable). Audit appends have a
writer of their own because they all queue for the one chain head anyway. Other writes
run in a transaction of their own.
Reads: a couple of reader tasks answer every token lookup waiting when they wake with
one query (``token = ANY($1)``), however many calls and tokens that is.
asyncpg prepares every statement once per connection and keeps it (its statement
cache), so the constant SQL below is parsed and planned once per pooled connection.

Several replicas (and several writers of one replica) write at once, so what SQLite
gets from its single writer comes from row locks here:

- the audit chain: an appender locks the head row (``SELECT ... FOR UPDATE``) before
  reading the previous MAC, so appenders of every replica queue up on one linear chain;
- inserts: a unique index that a concurrent transaction took first (the same token,
  deterministic key or request id) aborts the transaction, which is then run again from
  the start and resolves against the committed row (TOKEN_TAKEN, DETERMINISTIC_EXISTS,
  REQUEST_EXISTS as on SQLite); serialization failures and deadlocks are retried alike;
- retirement: the retired-key trigger holds the version row FOR KEY SHARE, retire
  locks it FOR UPDATE: a record can never be committed under a destroyed key;
- migrations: one transaction holding the migrations table's lock row FOR UPDATE;
- legal holds: setting one locks the subject's rows FOR KEY SHARE; whoever deletes rows
  (erasure, TTL and retention purges, an insert freeing an expired row) locks them FOR
  UPDATE and reads the holds in a later statement, so a hold is never missed.

No advisory locks, no extensions: row locks and plain SQL only (see README, PostgreSQL).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias, TypeVar

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from vault.errors import (
    FailedPreconditionError,
    StoreUnavailableError,
    VaultError,
)
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
from vault.storage.sql.dialect import POSTGRES
from vault.storage.sql.reads import SqlReads
from vault.storage.sql.resolution import InsertResolver
from vault.storage.sql.routes import SqlRoutes, Statement
from vault.storage.sql.schema import migrations

__all__ = ["PostgresStore", "is_postgres_url", "open_error", "redact_url", "same_database"]

log = logging.getLogger(__name__)

T = TypeVar("T")

# A connection of ours: a pooled one, or the one an opener migrates with.
_Conn: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"

# Most waiting writes coalesced into one transaction.
_MAX_WRITE_BATCH = 256
# Transactions of one process committing at once (each on its own pooled connection).
_WRITERS = 4
# Token lookups of one process in flight at once; each answers every lookup waiting
# when it wakes with one query.
_READERS = 2
# Most tokens looked up by one query.
_MAX_READ_BATCH = 512
# Times a transaction is run again after a unique-index race, serialization failure or
# deadlock before its callers get UNAVAILABLE.
_RETRIES = 8
# Seconds to connect (and to wait for a pooled connection): a database that is gone
# fails calls fast instead of piling them up.
_CONNECT_TIMEOUT = 5.0
# Seconds one statement may run.
_COMMAND_TIMEOUT = 30.0

_SELECT_TOKENS = f"SELECT {TOKEN_COLUMNS} FROM tokens WHERE token = ANY($1::text[])"  # noqa: S608
_INSERT_TOKEN = POSTGRES.insert("tokens", TOKEN_COLUMNS)
_INSERT_AUDIT = POSTGRES.insert("audit_log", AUDIT_COLUMNS)
_INSERT_CALLER = POSTGRES.insert("callers", CALLER_COLUMNS)
_PUT_PROGRESS = (
    f"INSERT INTO rewrap_progress (id, {PROGRESS_COLUMNS}) "  # noqa: S608 - constant
    "VALUES (1, $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) ON CONFLICT (id) DO UPDATE SET "
    + ", ".join(f"{c.strip()} = excluded.{c.strip()}" for c in PROGRESS_COLUMNS.split(","))
)
# Where each kind of wrapped key lives: (table, name column), as in the SQLite store.
_INSERTED = InsertOutcome(InsertStatus.INSERTED)
# Races that a fresh run of the same transaction resolves.
_RETRYABLE = (
    asyncpg.UniqueViolationError,
    asyncpg.SerializationError,
    asyncpg.DeadlockDetectedError,
)


def is_postgres_url(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


def same_database(one: str, other: str) -> bool:
    """Whether two postgresql:// URLs name the same database (host, port, name)."""
    try:
        a, b = urllib.parse.urlsplit(one), urllib.parse.urlsplit(other)
        where = [(u.hostname, u.port or 5432, u.path.strip("/")) for u in (a, b)]
    except ValueError:
        return False
    return where[0] == where[1]


def redact_url(url: str) -> str:
    """The URL without its password (and without a query that could carry one)."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "postgresql://…"
    user = f"{parts.username}@" if parts.username else ""
    return f"{parts.scheme}://{user}{host}{port}{parts.path}"


@dataclass(slots=True)
class _InsertOp:
    records: Sequence[TokenRecord]
    now: float
    encryptions: Mapping[int, int]
    future: asyncio.Future[list[InsertOutcome]]
    outcomes: list[InsertOutcome] = field(default_factory=list)


@dataclass(slots=True)
class _AuditOp:
    rows: Sequence[AuditRow]
    seal: AuditSeal
    future: asyncio.Future[list[AuditRow]]
    stored: list[AuditRow] = field(default_factory=list)


_Op = _InsertOp | _AuditOp


@dataclass(slots=True)
class _ReadOp:
    tokens: Sequence[str]
    future: asyncio.Future[list[TokenRecord | None]]


_EXISTING = f"SELECT id, {TOKEN_COLUMNS} FROM tokens WHERE "  # noqa: S608 - constant
_EXISTING_BY_TOKEN = _EXISTING + "token = ANY($1::text[])"
_EXISTING_BY_DETERMINISTIC_KEY = (
    _EXISTING  # noqa: S608 - constant
    + "deterministic AND (tenant, kind, token_format, fingerprint) IN "
    "(SELECT * FROM unnest($1::text[], $2::int[], $3::int[], $4::bytea[]))"
)
_EXISTING_BY_REQUEST_ID = (
    _EXISTING  # noqa: S608 - constant
    + "request_id IS NOT NULL AND (tenant, request_id) IN "
    "(SELECT * FROM unnest($1::text[], $2::text[]))"
)


async def _existing_for(
    conn: _Conn, records: Sequence[TokenRecord]
) -> tuple[dict[int, TokenRecord], list[tuple[str, str, bytes, int]]]:
    """Stored rows (by id) sharing a token, deterministic key or request id with records,
    and the request ids reserved by deterministic hits (tenant, id, hash, row id)."""
    found: dict[int, TokenRecord] = {}
    reserved: list[tuple[str, str, bytes, int]] = []
    for row in await conn.fetch(_EXISTING_BY_TOKEN, list({r.token for r in records})):
        found[row[0]] = token_from_row(row, 1)
    det = [r for r in records if r.deterministic]
    if det:
        for row in await conn.fetch(
            _EXISTING_BY_DETERMINISTIC_KEY,
            [r.tenant for r in det],
            [r.kind for r in det],
            [r.token_format for r in det],
            [r.fingerprint for r in det],
        ):
            found[row[0]] = token_from_row(row, 1)
    req = [r for r in records if r.request_id]
    if req:
        tenants, ids = [r.tenant for r in req], [r.request_id for r in req]
        for row in await conn.fetch(
            _EXISTING_BY_REQUEST_ID,
            tenants,
            ids,
        ):
            found[row[0]] = token_from_row(row, 1)
        for row in await conn.fetch(
            f"SELECT r.tenant, r.request_id, r.request_hash, t.id, {T_COLUMNS} "  # noqa: S608
            "FROM request_ids r JOIN tokens t ON t.token = r.token "
            "WHERE (r.tenant, r.request_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))",
            tenants,
            ids,
        ):
            found[row[3]] = token_from_row(row, 4)
            reserved.append((row[0], row[1], bytes(row[2]), row[3]))
    return found, reserved


async def _apply_inserts(conn: _Conn, ops: list[_InsertOp]) -> int:
    """Resolve collisions, deterministic and idempotent hits, then insert the rest (the
    same rules as the SQLite store). A unique violation raised here means a concurrent
    transaction won a race after our look-up: the caller runs the transaction again."""
    now = max(op.now for op in ops)
    records = [r for op in ops for r in op.records]
    if not any(r.deterministic or r.request_id for r in records):
        try:
            async with conn.transaction():  # a savepoint: a taken token undoes only this
                await conn.executemany(_INSERT_TOKEN, [token_params(r) for r in records])
        except asyncpg.UniqueViolationError:
            pass  # resolve below
        else:
            for op in ops:
                op.outcomes = [_INSERTED] * len(op.records)
            return len(records)
    existing, reserved = await _existing_for(conn, records)
    expired = [row_id for row_id, rec in existing.items() if not rec.live(now)]
    held: set[int] = set()
    if expired:
        # Dead rows: free their token, deterministic key and request id for reuse; but
        # expired rows of a subject under legal hold are kept, and count as live.
        _, held = await _delete_unheld(conn, expired)
    resolver = InsertResolver([rec for i, rec in existing.items() if rec.live(now) or i in held])
    for tenant, request_id, request_hash, row_id in reserved:
        if existing[row_id].live(now) or row_id in held:
            resolver.by_request[(tenant, request_id)] = (request_hash, existing[row_id])
    for op in ops:
        op.outcomes = resolver.resolve(op.records)
    if resolver.to_insert:
        await conn.executemany(_INSERT_TOKEN, [token_params(r) for r in resolver.to_insert])
    if resolver.reservations:
        await conn.executemany(
            "INSERT INTO request_ids (tenant, request_id, request_hash, token) "
            "VALUES ($1, $2, $3, $4)",
            resolver.reservations,
        )
    return len(resolver.to_insert)


async def _delete_unheld(conn: _Conn, ids: Sequence[int]) -> tuple[set[int], set[int]]:
    """Delete the rows unless their subject is under legal hold; returns the ids deleted
    and the ids kept because held (rows gone meanwhile are in neither).

    The rows are locked FOR UPDATE first and the holds read by a later statement: under
    READ COMMITTED that one sees a hold committed while this waited for a row
    (set_subject_hold locks the subject's rows FOR KEY SHARE), so none is missed."""
    locked = await conn.fetch(
        "SELECT id FROM tokens WHERE id = ANY($1::bigint[]) ORDER BY id FOR UPDATE", list(ids)
    )
    if not locked:
        return set(), set()
    present = [int(r[0]) for r in locked]
    rows = await conn.fetch(
        f"DELETE FROM tokens WHERE id = ANY($1::bigint[]) AND NOT ({HELD}) RETURNING id",  # noqa: S608 - constant
        present,
    )
    deleted = {int(r[0]) for r in rows}
    return deleted, set(present) - deleted


async def _count_encryptions(conn: _Conn, ops: list[_InsertOp]) -> None:
    """Add the calls' encryptions to the counters. Last in the transaction, in version
    order: the counter row is the hottest lock of the schema, held until commit."""
    usage: dict[int, int] = {}
    for op in ops:
        for version, count in op.encryptions.items():
            usage[version] = usage.get(version, 0) + count
    if usage:
        await conn.executemany(
            "UPDATE key_versions SET encryptions = encryptions + $1 WHERE version = $2",
            [(usage[v], v) for v in sorted(usage)],
        )


async def _lock_audit_head(conn: _Conn) -> None:
    """Lock the head row (created on the first append) until this transaction ends."""
    lock = "SELECT seq FROM audit_head WHERE id = 1 FOR UPDATE"
    if await conn.fetchrow(lock) is None:
        # The first append: a concurrent first appender's row makes this wait, then
        # do nothing; either way the row exists and is ours to lock next.
        await conn.execute(
            "INSERT INTO audit_head (id, seq, mac) VALUES (1, 0, $1) ON CONFLICT (id) DO NOTHING",
            AUDIT_GENESIS_MAC,
        )
        await conn.fetchrow(lock)


async def _apply_audits(conn: _Conn, ops: list[_AuditOp]) -> None:
    """Chain every waiting op's rows onto the newest stored record (in the caller's
    transaction, which holds only audit appends: a failure fails just those)."""
    await _lock_audit_head(conn)
    # A statement of its own, after the lock: under READ COMMITTED it sees the rows
    # the previous holder committed (a join with the locking read would not).
    last = await conn.fetchrow("SELECT seq, mac FROM audit_log ORDER BY seq DESC LIMIT 1")
    seq, prev = (int(last[0]), bytes(last[1])) if last else (0, AUDIT_GENESIS_MAC)
    chain = chain_audits(seq, prev, [(op.rows, op.seal) for op in ops])
    await conn.executemany(_INSERT_AUDIT, chain.params)
    await conn.execute(
        "UPDATE audit_head SET seq = $1, mac = $2 WHERE id = 1", chain.head_seq, chain.head_mac
    )
    for op, stored in zip(ops, chain.stored, strict=True):
        op.stored = stored


# Errors that mean the database (or the way to it) is gone, not that a statement is bad.
_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
)


class PostgresStore(SqlReads, SqlRoutes):
    """Store on one PostgreSQL database (see the module docstring for the design)."""

    _dialect = POSTGRES

    def __init__(
        self,
        url: str,
        *,
        on_commit: CommitObserver | None = None,
        pool_size: int = 10,
        writers: int = _WRITERS,
    ) -> None:
        self._url = url
        self._on_commit = on_commit
        self._pool_size = max(pool_size, writers + 1)
        self._writers = writers
        self._pool: asyncpg.Pool[asyncpg.Record] | None = None
        self._write_queue: asyncio.Queue[_Op | None] = asyncio.Queue()
        # Audit appends queue apart, for one writer: they all wait for the one chain
        # head anyway, so one transaction takes every waiting append (group commit).
        self._audit_queue: asyncio.Queue[_Op | None] = asyncio.Queue()
        self._read_queue: asyncio.Queue[_ReadOp | None] = asyncio.Queue()
        self._readers: list[asyncio.Task[None]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False

    def __repr__(self) -> str:
        return f"PostgresStore({redact_url(self._url)})"

    async def _rows(self, sql: str, *args: Any) -> list[Any]:
        return list(await self._fetch(sql, *args))

    # -- lifecycle ---------------------------------------------------------------

    async def open(self) -> None:
        where = redact_url(self._url)
        try:
            pool = await asyncpg.create_pool(
                self._url,
                min_size=1,
                max_size=self._pool_size,
                timeout=_CONNECT_TIMEOUT,
                command_timeout=_COMMAND_TIMEOUT,
                server_settings={"application_name": "vault"},
            )
        except Exception as exc:  # noqa: BLE001 - every cause becomes one value-free line
            raise open_error(exc, where) from None
        try:
            async with pool.acquire() as conn:
                await _migrate(conn)
        except BaseException as exc:
            # A failed open leaves no connection behind, and no half-applied migration
            # (they ran in one transaction).
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pool.close(), _CONNECT_TIMEOUT)
            if isinstance(exc, Exception) and not isinstance(exc, VaultError):
                raise open_error(exc, where) from None
            raise
        self._pool = pool
        self._tasks = [
            *(
                asyncio.create_task(
                    self._write_loop(self._write_queue), name=f"postgres-writer-{i}"
                )
                for i in range(self._writers)
            ),
            asyncio.create_task(self._write_loop(self._audit_queue), name="postgres-audit"),
        ]
        self._readers = [
            asyncio.create_task(self._read_loop(), name=f"postgres-reader-{i}")
            for i in range(_READERS)
        ]

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # Each writer stops at its marker after what was queued before it: pending
        # commits flush.
        for _ in range(self._writers):
            self._write_queue.put_nowait(None)
        self._audit_queue.put_nowait(None)
        for _ in self._readers:
            self._read_queue.put_nowait(None)
        if self._tasks or self._readers:
            await asyncio.gather(*self._tasks, *self._readers, return_exceptions=True)
        while not self._read_queue.empty():
            unread = self._read_queue.get_nowait()
            if unread is not None and not unread.future.done():
                unread.future.set_exception(StoreUnavailableError("the store is closing"))
        for queue in (self._write_queue, self._audit_queue):
            while not queue.empty():
                left = queue.get_nowait()
                if left is not None and not left.future.done():
                    left.future.set_exception(StoreUnavailableError("the store is closing"))
        if self._pool is not None:
            try:
                await asyncio.wait_for(self._pool.close(), _CONNECT_TIMEOUT)
            except _CONNECTION_ERRORS:
                self._pool.terminate()
            self._pool = None

    def _ready_pool(self) -> asyncpg.Pool[asyncpg.Record]:
        if self._closed or self._pool is None:
            raise StoreUnavailableError("the store is not open")
        return self._pool

    # -- the writers -------------------------------------------------------------

    def _submit(self, op: _Op) -> None:
        if self._closed or not self._tasks:
            raise StoreUnavailableError("the store is not open")
        (self._audit_queue if isinstance(op, _AuditOp) else self._write_queue).put_nowait(op)

    async def _write_loop(self, queue: asyncio.Queue[_Op | None]) -> None:
        while True:
            op = await queue.get()
            if op is None:
                return
            batch: list[_Op] = [op]
            stopping = False
            while len(batch) < _MAX_WRITE_BATCH and not queue.empty():
                nxt = queue.get_nowait()
                if nxt is None:
                    stopping = True
                    break
                batch.append(nxt)
            await self._commit_batch(batch)
            if stopping:
                return

    async def _commit_batch(self, batch: list[_Op]) -> None:
        inserts = [op for op in batch if isinstance(op, _InsertOp)]
        audits = [op for op in batch if isinstance(op, _AuditOp)]
        try:
            inserted = await self._run_batch(inserts, audits)
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
        for aop in audits:
            if not aop.future.done():
                aop.future.set_result(aop.stored)

    async def _run_batch(self, inserts: list[_InsertOp], audits: list[_AuditOp]) -> int:
        """The group's one transaction, run again after a race; returns rows inserted."""
        pool = self._pool
        assert pool is not None  # noqa: S101 - open() ran
        for attempt in range(_RETRIES):
            inserted = 0
            try:
                async with pool.acquire(timeout=_CONNECT_TIMEOUT) as conn, conn.transaction():
                    # (A batch is all audit appends or all inserts: see _submit.)
                    if audits:
                        await _apply_audits(conn, audits)
                    if inserts:
                        inserted = await _apply_inserts(conn, inserts)
                        await _count_encryptions(conn, inserts)
            except _RETRYABLE:
                if attempt == _RETRIES - 1:
                    raise
                await asyncio.sleep(0.001 * 2**attempt)
            else:
                return inserted
        raise AssertionError  # pragma: no cover - the loop returns or raises

    # -- the readers -------------------------------------------------------------

    async def _read_loop(self) -> None:
        while True:
            op = await self._read_queue.get()
            if op is None:
                return
            batch = [op]
            count = len(op.tokens)
            stopping = False
            while count < _MAX_READ_BATCH and not self._read_queue.empty():
                nxt = self._read_queue.get_nowait()
                if nxt is None:
                    stopping = True
                    break
                batch.append(nxt)
                count += len(nxt.tokens)
            await self._answer_reads(batch)
            if stopping:
                return

    async def _answer_reads(self, batch: list[_ReadOp]) -> None:
        wanted = list({t for rop in batch for t in rop.tokens})
        try:
            found = await self._fetch(_SELECT_TOKENS, wanted)
        except StoreUnavailableError as exc:
            for rop in batch:
                if not rop.future.done():
                    rop.future.set_exception(exc)
            return
        rows = {row[0]: token_from_row(row) for row in found}
        for rop in batch:
            if not rop.future.done():
                rop.future.set_result([rows.get(t) for t in rop.tokens])

    async def _write(
        self,
        apply: Callable[[_Conn], Awaitable[T]],
        *,
        retry_unique: bool = False,
    ) -> T:
        """Run ``apply`` in a transaction of its own, again after a retryable race."""
        pool = self._ready_pool()
        retryable: tuple[type[BaseException], ...] = _RETRYABLE if retry_unique else _RETRYABLE[1:]
        for attempt in range(_RETRIES):
            try:
                async with pool.acquire(timeout=_CONNECT_TIMEOUT) as conn, conn.transaction():
                    return await apply(conn)
            except VaultError:
                raise
            except retryable:
                if attempt == _RETRIES - 1:
                    break
                await asyncio.sleep(0.001 * 2**attempt)
            except Exception as exc:  # noqa: BLE001 - the driver's errors become UNAVAILABLE
                log.error("store write failed: %s", type(exc).__name__)
                raise StoreUnavailableError("the store could not commit") from None
        raise StoreUnavailableError("the store could not commit")

    async def _fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        pool = self._ready_pool()
        for attempt in range(2):
            try:
                return await pool.fetch(sql, *args, timeout=_COMMAND_TIMEOUT)
            except TimeoutError:
                log.error("store read failed: %s", "TimeoutError")  # not asked again
            except _CONNECTION_ERRORS as exc:
                # A pooled connection the database cut (it restarted): a read is safe to
                # ask again once, on a new connection; a database still gone fails it fast.
                if attempt == 0:
                    continue
                log.error("store read failed: %s", type(exc).__name__)
            except Exception as exc:  # noqa: BLE001 - the driver's errors become UNAVAILABLE
                log.error("store read failed: %s", type(exc).__name__)
            break
        raise StoreUnavailableError("the store could not be read")

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
        if self._closed or not self._readers:
            raise StoreUnavailableError("the store is not open")
        future: asyncio.Future[list[TokenRecord | None]] = (
            asyncio.get_running_loop().create_future()
        )
        self._read_queue.put_nowait(_ReadOp(tokens, future))
        return await future

    async def delete_token(self, tenant: str, token: str) -> bool:
        async def apply(conn: _Conn) -> bool:
            status = await conn.execute(
                "DELETE FROM tokens WHERE token = $1 AND tenant = $2", token, tenant
            )
            return _rowcount(status) > 0

        return await self._write(apply)

    async def purge_expired(self, now: float, limit: int) -> int:
        async def apply(conn: _Conn) -> int:
            # Never a held subject's row, even one held while this runs (_delete_unheld).
            rows = await conn.fetch(
                "SELECT id FROM tokens WHERE expires_at IS NOT NULL AND expires_at <= $1 "  # noqa: S608 - constant
                f"AND NOT ({HELD}) ORDER BY expires_at LIMIT $2",
                now,
                limit,
            )
            if not rows:
                return 0
            deleted, _ = await _delete_unheld(conn, [int(r[0]) for r in rows])
            return len(deleted)

        return await self._write(apply)

    async def add_key_version(
        self, wrapped_key: bytes, kek_id: str, created_at: float, *, primary: bool
    ) -> int:
        async def apply(conn: _Conn) -> int:
            version = int(
                await conn.fetchval("SELECT coalesce(max(version), 0) + 1 FROM key_versions")
            )
            if primary:
                await conn.execute(
                    "UPDATE key_versions SET state = 'active' WHERE state = 'primary'"
                )
            await conn.execute(
                "INSERT INTO key_versions (version, state, wrapped_key, kek_id, created_at) "
                "VALUES ($1, $2, $3, $4, $5)",
                version,
                "primary" if primary else "active",
                wrapped_key,
                kek_id,
                created_at,
            )
            return version

        # Two writers that read the same max: one gets a unique violation, runs again.
        return await self._write(apply, retry_unique=True)

    async def add_next_key_version(
        self, version: int, wrapped_key: bytes, kek_id: str, created_at: float
    ) -> bool:
        async def apply(conn: _Conn) -> bool:
            nxt = int(await conn.fetchval("SELECT coalesce(max(version), 0) + 1 FROM key_versions"))
            if nxt != version:
                return False
            await conn.execute("UPDATE key_versions SET state = 'active' WHERE state = 'primary'")
            try:
                async with conn.transaction():
                    await conn.execute(
                        "INSERT INTO key_versions (version, state, wrapped_key, kek_id, created_at)"
                        " VALUES ($1, 'primary', $2, $3, $4)",
                        version,
                        wrapped_key,
                        kek_id,
                        created_at,
                    )
            except asyncpg.UniqueViolationError:
                # Another writer took the number first: this one writes nothing.
                raise _NotNext from None
            return True

        try:
            return await self._write(apply)
        except _NotNext:
            return False

    async def tokens_to_rewrap(self, primary: int, after: int, limit: int) -> list[RewrapRow]:
        # Per older version, its next rows by (key_version, id); then the first of those:
        # the rows under the primary (most of the table after a while) are never visited.
        rows = await self._fetch(
            f"SELECT t.id, {T_COLUMNS} FROM key_versions v CROSS JOIN LATERAL ("  # noqa: S608
            # Stated on (key_version, id), the index's own key: the planner walks that
            # index instead of filtering the primary key (it does not know v.version).
            "SELECT * FROM tokens WHERE key_version = v.version "
            "AND (key_version, id) > (v.version, $2) "
            "ORDER BY key_version, id LIMIT $3) t WHERE v.version <> $1 ORDER BY t.id LIMIT $3",
            primary,
            after,
            limit,
        )
        return [RewrapRow(int(r[0]), token_from_row(r, 1)) for r in rows]

    async def rewrap_tokens(self, updates: Sequence[RewrapUpdate], encryptions: int) -> int:
        async def apply(conn: _Conn) -> int:
            done = 0
            if updates:
                # One statement for the batch; each row changes only if it still holds
                # its old version and ciphertext (compare-and-set).
                status = await conn.execute(
                    "UPDATE tokens AS t SET ciphertext = u.new_ct, key_version = u.new_v "
                    "FROM unnest($1::text[], $2::bigint[], $3::bytea[], $4::bigint[], "
                    "$5::bytea[]) AS u(token, old_v, old_ct, new_v, new_ct) "
                    "WHERE t.token = u.token AND t.key_version = u.old_v "
                    "AND t.ciphertext = u.old_ct",
                    [u.token for u in updates],
                    [u.old_version for u in updates],
                    [u.old_ciphertext for u in updates],
                    [u.new_version for u in updates],
                    [u.new_ciphertext for u in updates],
                )
                done = _rowcount(status)
            if updates and encryptions:
                await conn.execute(
                    "UPDATE key_versions SET encryptions = encryptions + $1 WHERE version = $2",
                    encryptions,
                    updates[0].new_version,
                )
            return done

        return await self._write(apply)

    async def _take_lease(self, table: str, key: str, keyval: Any, *args: Any) -> bool:
        holder, now, expires_at = args

        async def apply(conn: _Conn) -> bool:
            got = await conn.fetchval(
                f"INSERT INTO {table} ({key}, holder, expires_at) VALUES ($1, $2, $3) "  # noqa: S608
                f"ON CONFLICT ({key}) DO UPDATE SET holder = excluded.holder, "
                "expires_at = excluded.expires_at "
                f"WHERE {table}.holder = excluded.holder OR {table}.expires_at <= $4 "
                "RETURNING holder",
                keyval,
                holder,
                expires_at,
                now,
            )
            return bool(got == holder)

        return await self._write(apply, retry_unique=True)

    async def take_rewrap_lease(self, holder: str, now: float, expires_at: float) -> bool:
        return await self._take_lease("rewrap_lease", "id", 1, holder, now, expires_at)

    async def release_rewrap_lease(self, holder: str) -> None:
        async def apply(conn: _Conn) -> None:
            await conn.execute("DELETE FROM rewrap_lease WHERE id = 1 AND holder = $1", holder)

        await self._write(apply)

    async def put_rewrap_progress(self, progress: RewrapProgressRow) -> None:
        p = progress

        async def apply(conn: _Conn) -> None:
            # One upsert: writers of several replicas replace the row, never duplicate it.
            await conn.execute(
                _PUT_PROGRESS,
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
            )

        await self._write(apply, retry_unique=True)

    async def rewrap_progress(self) -> RewrapProgressRow | None:
        # One statement: the progress and its run's lease come from one snapshot.
        rows = await self._fetch(
            f"SELECT {P_PROGRESS_COLUMNS}, l.expires_at FROM rewrap_progress p "  # noqa: S608 - constant
            "LEFT JOIN rewrap_lease l ON l.id = 1 AND l.holder = p.holder WHERE p.id = 1"
        )
        if not rows:
            return None
        r = rows[0]
        return RewrapProgressRow(
            r[0],
            int(r[1]),
            int(r[2]),
            float(r[3]),
            float(r[4]),
            float(r[5]),
            None if r[6] is None else float(r[6]),
            int(r[7]),
            int(r[8]),
            int(r[9]),
            int(r[10]),
            int(r[11]),
            None if r[12] is None else float(r[12]),
        )

    async def take_job_lease(self, job: str, holder: str, now: float, expires_at: float) -> bool:
        return await self._take_lease("job_leases", "job", job, holder, now, expires_at)

    async def release_job_lease(self, job: str, holder: str) -> None:
        async def apply(conn: _Conn) -> None:
            await conn.execute("DELETE FROM job_leases WHERE job = $1 AND holder = $2", job, holder)

        await self._write(apply)

    async def retire_key_version(self, version: int) -> RetireOutcome:
        async def apply(conn: _Conn) -> RetireOutcome:
            # FOR UPDATE waits for every transaction that inserted under it (their trigger
            # holds the row FOR KEY SHARE) and keeps new ones out until this one ends.
            state = await conn.fetchval(
                "SELECT state FROM key_versions WHERE version = $1 FOR UPDATE", version
            )
            if state is None:
                return RetireOutcome.UNKNOWN
            if state == "primary":
                return RetireOutcome.PRIMARY
            if state == "retired":
                return RetireOutcome.ALREADY_RETIRED
            used = await conn.fetchval(
                "SELECT 1 FROM tokens WHERE key_version = $1 LIMIT 1", version
            )
            if used is not None:
                return RetireOutcome.IN_USE
            await conn.execute(
                "UPDATE key_versions SET state = 'retired', wrapped_key = NULL WHERE version = $1",
                version,
            )
            return RetireOutcome.RETIRED

        return await self._write(apply)

    # Wrapped keys kept by name; `table` and `column` are constants of ours.

    async def _put_wrapped_key(
        self, table: str, column: str, name: str, wrapped_key: bytes, kek_id: str, created_at: float
    ) -> bytes:
        async def apply(conn: _Conn) -> bytes:
            # A concurrent first writer makes this wait for its commit, then do nothing.
            await conn.execute(
                f"INSERT INTO {table} ({column}, wrapped_key, kek_id, created_at) "  # noqa: S608
                f"VALUES ($1, $2, $3, $4) ON CONFLICT ({column}) DO NOTHING",
                name,
                wrapped_key,
                kek_id,
                created_at,
            )
            stored = await conn.fetchval(
                f"SELECT wrapped_key FROM {table} WHERE {column} = $1",  # noqa: S608
                name,
            )
            return bytes(stored)

        return await self._write(apply, retry_unique=True)

    async def put_fingerprint_key(
        self, tenant: str, wrapped_key: bytes, kek_id: str, created_at: float
    ) -> bytes:
        return await self._put_wrapped_key(
            "fingerprint_keys", "tenant", tenant, wrapped_key, kek_id, created_at
        )

    async def _statements(self, statements: Sequence[Statement]) -> list[int]:
        """The statements in one transaction of their own (SqlRoutes)."""

        async def apply(conn: _Conn) -> list[int]:
            return [_rowcount(await conn.execute(sql, *params)) for sql, params in statements]

        return await self._write(apply)

    async def add_caller(self, caller: CallerRow) -> None:
        async def apply(conn: _Conn) -> None:
            try:
                async with conn.transaction():
                    await conn.execute(_INSERT_CALLER, *caller_params(caller))
            except asyncpg.UniqueViolationError:
                raise caller_exists() from None

        await self._write(apply)

    async def revoke_caller(self, name: str, revoked_at: float) -> bool:
        async def apply(conn: _Conn) -> bool:
            status = await conn.execute(
                "UPDATE callers SET revoked_at = $1 WHERE name = $2 AND revoked_at IS NULL",
                revoked_at,
                name,
            )
            return _rowcount(status) > 0

        return await self._write(apply)

    async def put_service_key(
        self, name: str, wrapped_key: bytes, kek_id: str, created_at: float
    ) -> bytes:
        return await self._put_wrapped_key(
            "service_keys", "name", name, wrapped_key, kek_id, created_at
        )

    async def replace_wrapped_key(
        self, kind: WrappedKeyKind, name: str, old: bytes, new: bytes, kek_id: str
    ) -> bool:
        table, column = WRAPPED_KEY_TABLES[kind]
        key: object = int(name) if kind is WrappedKeyKind.DATA_KEY else name

        async def apply(conn: _Conn) -> bool:
            # Compare-and-set in one statement: a concurrent replace of the same row waits
            # for the row lock, then re-checks `wrapped_key = old` against the committed
            # row and writes nothing if the other one won. A retired key (NULL) never
            # matches, so it is never revived.
            status = await conn.execute(
                f"UPDATE {table} SET wrapped_key = $1, kek_id = $2 "  # noqa: S608 - constants
                f"WHERE {column} = $3 AND wrapped_key = $4",
                new,
                kek_id,
                key,
                old,
            )
            return _rowcount(status) == 1

        return await self._write(apply)

    async def put_share_scheme(self, scheme: ShareSchemeRow) -> bool:
        async def apply(conn: _Conn) -> bool:
            # A concurrent first writer makes this wait for its commit, then do nothing:
            # exactly one of them gets True.
            status = await conn.execute(
                "INSERT INTO kek_shares "
                "(id, kek_id, threshold, share_count, verifiers, created_at) "
                "VALUES (1, $1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING",
                scheme.kek_id,
                scheme.threshold,
                scheme.share_count,
                b"".join(scheme.verifiers),
                scheme.created_at,
            )
            return _rowcount(status) == 1

        return await self._write(apply, retry_unique=True)

    async def append_audit(self, rows: Sequence[AuditRow], seal: AuditSeal) -> list[AuditRow]:
        if not rows:
            return []
        future: asyncio.Future[list[AuditRow]] = asyncio.get_running_loop().create_future()
        self._submit(_AuditOp(rows, seal, future))
        return await future

    # -- data subjects (legal hold, erasure, export, correction) ---------------------
    # Holds against erasure and purges: set_subject_hold locks the subject's rows FOR
    # KEY SHARE; whoever deletes them locks them FOR UPDATE first and reads the holds in
    # a later statement (READ COMMITTED: it sees every hold committed before its lock).

    async def erase_subject(self, tenant: str, subject_ref: bytes) -> EraseOutcome:
        async def apply(conn: _Conn) -> EraseOutcome:
            # The rows first: a hold being set waits for this transaction, or this waits
            # for the hold's and then sees it below.
            await conn.execute(
                "SELECT id FROM tokens WHERE tenant = $1 AND subject_ref = $2 "
                "ORDER BY id FOR UPDATE",
                tenant,
                subject_ref,
            )
            held = await conn.fetchval(
                "SELECT 1 FROM subject_holds WHERE tenant = $1 AND subject_ref = $2",
                tenant,
                subject_ref,
            )
            if held is not None:
                return EraseOutcome(held=True, erased=0)
            # PostgreSQL has no secure_delete: the dead rows stay in their pages until
            # VACUUM reuses them (README, PostgreSQL); the subject key is what shreds.
            status = await conn.execute(
                "DELETE FROM tokens WHERE tenant = $1 AND subject_ref = $2", tenant, subject_ref
            )
            return EraseOutcome(held=False, erased=_rowcount(status))

        return await self._write(apply)

    async def set_subject_hold(
        self, tenant: str, subject_ref: bytes, reason: str, now: float
    ) -> bool:
        async def apply(conn: _Conn) -> bool:
            status = await conn.execute(
                "INSERT INTO subject_holds (tenant, subject_ref, reason, held_at) "
                "VALUES ($1, $2, $3, $4) ON CONFLICT (tenant, subject_ref) DO NOTHING",
                tenant,
                subject_ref,
                reason,
                now,
            )
            # Until commit: an erasure or purge that locked a row first commits first; one
            # that comes later waits, then sees the hold.
            await conn.execute(
                "SELECT id FROM tokens WHERE tenant = $1 AND subject_ref = $2 "
                "ORDER BY id FOR KEY SHARE",
                tenant,
                subject_ref,
            )
            return _rowcount(status) > 0

        return await self._write(apply, retry_unique=True)

    async def release_subject_hold(self, tenant: str, subject_ref: bytes) -> bool:
        async def apply(conn: _Conn) -> bool:
            status = await conn.execute(
                "DELETE FROM subject_holds WHERE tenant = $1 AND subject_ref = $2",
                tenant,
                subject_ref,
            )
            return _rowcount(status) > 0

        return await self._write(apply)

    async def update_token(self, update: TokenUpdate) -> UpdateStatus:
        u = update

        async def apply(conn: _Conn) -> UpdateStatus:
            # FOR UPDATE: a concurrent correction of the same row waits, then finds the
            # ciphertext changed (compare-and-set).
            row = await conn.fetchrow(
                f"SELECT id, {TOKEN_COLUMNS} FROM tokens "  # noqa: S608 - constant
                "WHERE token = $1 AND tenant = $2 AND key_version = $3 AND ciphertext = $4 "
                "FOR UPDATE",
                u.token,
                u.tenant,
                u.old_version,
                u.old_ciphertext,
            )
            if row is None:
                return UpdateStatus.CHANGED
            row_id, rec = int(row[0]), token_from_row(row, 1)
            if rec.deterministic:
                other = await conn.fetchrow(
                    f"SELECT id, {TOKEN_COLUMNS} FROM tokens WHERE deterministic "  # noqa: S608 - constant
                    "AND tenant = $1 AND kind = $2 AND token_format = $3 AND fingerprint = $4 "
                    "AND id <> $5",
                    rec.tenant,
                    rec.kind,
                    rec.token_format,
                    u.new_fingerprint,
                    row_id,
                )
                if other is not None:
                    if token_from_row(other, 1).live(u.now):
                        return UpdateStatus.DETERMINISTIC_EXISTS
                    # Expired: its deterministic key is free again, unless it is held.
                    _, held = await _delete_unheld(conn, [int(other[0])])
                    if held:
                        return UpdateStatus.DETERMINISTIC_EXISTS
            # A twin committed meanwhile makes this a unique violation: run again, and
            # the look-up above finds it.
            await conn.execute(
                "UPDATE tokens SET ciphertext = $1, key_version = $2, fingerprint = $3 "
                "WHERE id = $4",
                u.new_ciphertext,
                u.new_version,
                u.new_fingerprint,
                row_id,
            )
            await conn.execute(
                "UPDATE key_versions SET encryptions = encryptions + 1 WHERE version = $1",
                u.new_version,
            )
            return UpdateStatus.UPDATED

        return await self._write(apply, retry_unique=True)

    async def audit_records_for_tokens(
        self, tenant: str, action: str, tokens: Sequence[str]
    ) -> list[AuditRow]:
        wanted = list(dict.fromkeys(tokens))
        if not wanted:
            return []
        # A text search of the JSON column (no jsonb cast: a row that is not valid JSON
        # must not fail the query), confirmed on the decoded row below.
        patterns = ["%" + _like_escape(json.dumps(t)) + "%" for t in wanted]
        rows = await self._fetch(
            f"SELECT {AUDIT_COLUMNS} FROM audit_log "  # noqa: S608 - constant
            "WHERE tenant = $1 AND action = $2 AND tokens LIKE ANY($3::text[]) ORDER BY seq",
            tenant,
            action,
            patterns,
        )
        found = [audit_from_row([*row[:12], bytes(row[12])]) for row in rows]
        targets = set(wanted)
        return [r for r in found if targets.intersection(r.tokens)]

    # -- retention -------------------------------------------------------------------

    async def set_retention_policy(
        self, tenant: str, kind: int, max_age: float, now: float
    ) -> None:
        async def apply(conn: _Conn) -> None:
            await conn.execute(
                "INSERT INTO retention_policies (tenant, kind, max_age, set_at) "
                "VALUES ($1, $2, $3, $4) ON CONFLICT (tenant, kind) DO UPDATE SET "
                "max_age = excluded.max_age, set_at = excluded.set_at",
                tenant,
                kind,
                max_age,
                now,
            )

        await self._write(apply, retry_unique=True)

    async def clear_retention_policy(self, tenant: str, kind: int) -> bool:
        async def apply(conn: _Conn) -> bool:
            status = await conn.execute(
                "DELETE FROM retention_policies WHERE tenant = $1 AND kind = $2", tenant, kind
            )
            return _rowcount(status) > 0

        return await self._write(apply)

    async def _age_boundary(self, created_before: float) -> int:
        """The last row id created before ``created_before``, by binary search over the
        id (as in SQLite: created_at grows with id, so old rows are an id prefix; a row
        whose clock ran behind is found by a later run)."""
        first = await self._fetch("SELECT min(id), max(id) FROM tokens")
        lo, hi = (int(first[0][0] or 0), int(first[0][1] or 0)) if first else (0, 0)
        if not hi:
            return 0
        oldest = await self._fetch("SELECT created_at FROM tokens WHERE id = $1", lo)
        if not oldest or oldest[0][0] >= created_before:
            return 0
        while lo < hi:
            mid = (lo + hi + 1) // 2
            row = await self._fetch(
                "SELECT id, created_at FROM tokens WHERE id >= $1 ORDER BY id LIMIT 1", mid
            )
            if row and row[0][1] < created_before:
                lo = int(row[0][0])
            else:
                hi = mid - 1
        return lo

    async def purge_retained(
        self, tenant: str, kind: int, created_before: float, now: float, limit: int
    ) -> int:
        boundary = await self._age_boundary(created_before)
        purged, after = 0, 0
        while after < boundary:
            done, after = await self._purge_retained_batch(
                tenant, kind, created_before, now, limit, after, boundary
            )
            purged += done
        return purged

    async def _purge_retained_batch(
        self,
        tenant: str,
        kind: int,
        created_before: float,
        now: float,
        limit: int,
        after: int,
        boundary: int,
    ) -> tuple[int, int]:
        """One transaction: up to ``limit`` unheld rows past id ``after``; returns how
        many went and the id to go on after (``boundary`` once none are left)."""

        async def apply(conn: _Conn) -> tuple[int, int]:
            rows = await conn.fetch(
                "SELECT id FROM tokens WHERE id > $1 AND id <= $2 AND tenant = $3 "  # noqa: S608 - constant
                f"AND kind = $4 AND created_at < $5 AND NOT ({HELD}) ORDER BY id LIMIT $6",
                after,
                boundary,
                tenant,
                kind,
                created_before,
                limit,
            )
            if not rows:
                return 0, boundary
            ids = [int(r[0]) for r in rows]
            deleted, _ = await _delete_unheld(conn, ids)
            if deleted:
                await conn.execute(
                    "INSERT INTO retention_purges (tenant, kind, purged, last_purge_at) "
                    "VALUES ($1, $2, $3, $4) ON CONFLICT (tenant, kind) DO UPDATE SET "
                    "purged = retention_purges.purged + excluded.purged, "
                    "last_purge_at = excluded.last_purge_at",
                    tenant,
                    kind,
                    len(deleted),
                    now,
                )
            return len(deleted), ids[-1] if len(ids) == limit else boundary

        return await self._write(apply, retry_unique=True)

    async def retention_counts(
        self, tenant: str, kind: int, created_before: float
    ) -> RetentionCounts:
        rows = await self._fetch(
            f"SELECT ({HELD}) AS held, count(*) FROM tokens "  # noqa: S608 - constant
            "WHERE id <= $1 AND tenant = $2 AND kind = $3 AND created_at < $4 GROUP BY 1",
            await self._age_boundary(created_before),
            tenant,
            kind,
            created_before,
        )
        return retention_counts(rows)


class _NotNext(Exception):  # noqa: N818 - a control-flow signal, not an error
    """add_next_key_version lost the race for its number."""


def _like_escape(text: str) -> str:
    """``text`` matched literally by LIKE (backslash is its default escape)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _rowcount(status: str) -> int:
    """Rows touched, from a command tag such as ``DELETE 3`` or ``UPDATE 1``."""
    tail = status.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def open_error(exc: BaseException, where: str) -> FailedPreconditionError:
    """One value-free line for a failed open: never the URL's password or the driver's
    own message (which can quote the URL)."""
    if isinstance(exc, FailedPreconditionError):
        return exc
    if isinstance(
        exc, asyncpg.InvalidPasswordError | asyncpg.InvalidAuthorizationSpecificationError
    ):
        text = f"the database at {where} refused the credentials"
    elif isinstance(exc, asyncpg.InvalidCatalogNameError):
        text = f"no such database at {where}"
    elif isinstance(exc, asyncpg.ClientConfigurationError | ValueError):
        text = "the database URL is not valid"
    elif isinstance(exc, OSError | TimeoutError | asyncpg.CannotConnectNowError):
        text = f"cannot reach the database at {where}"
    else:
        text = f"cannot open the database at {where} ({type(exc).__name__})"
    return FailedPreconditionError(text, reason="STORE_OPEN_FAILED")


# Errors of two openers creating the migrations table at the same moment.
_CREATE_RACES = (*_RETRYABLE, asyncpg.DuplicateTableError, asyncpg.DuplicateObjectError)

# The first row of schema_migrations is a lock, not a migration: openers lock it FOR
# UPDATE, so replicas starting together apply each migration once.
_LOCK_VERSION = 0


async def _migrate(conn: _Conn) -> None:
    known = migrations("postgres")
    numbers = {number for number, _ in known}
    for attempt in range(_RETRIES):
        try:
            async with conn.transaction():
                await conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations ("
                    " version BIGINT PRIMARY KEY,"  # migration number (0: the openers' lock)
                    " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"  # when it ran
                )
                await conn.execute(
                    "INSERT INTO schema_migrations (version) VALUES ($1) "
                    "ON CONFLICT (version) DO NOTHING",
                    _LOCK_VERSION,
                )
            break
        except _CREATE_RACES:
            # Another opener created the table at the same moment: it exists now.
            if attempt == _RETRIES - 1:
                raise
    # Every pending migration in one transaction: a failure leaves the schema as it was.
    async with conn.transaction():
        await conn.execute(
            "SELECT version FROM schema_migrations WHERE version = $1 FOR UPDATE", _LOCK_VERSION
        )
        applied = {
            int(r[0])
            for r in await conn.fetch(
                "SELECT version FROM schema_migrations WHERE version <> $1", _LOCK_VERSION
            )
        }
        if applied - numbers:
            # A migration this code does not know ran: a newer vault owns the schema.
            raise FailedPreconditionError(
                "the store's schema is newer than this vault; upgrade the vault",
                reason="SCHEMA_TOO_NEW",
            )
        for number, script in known:
            if number in applied:
                continue
            await conn.execute(script)  # no arguments: the simple protocol, many statements
            await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", number)
            log.info("applied migration %d", number)
