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

The write rules are written once for both stores (sql/tokens.py, keys.py, callers.py,
subjects.py, retention.py, leases.py) as generators of statements (sql/tx.py); this
module drives them with awaits on a pooled connection. What is PostgreSQL's own: the
pool, the writers and readers, the migrations, rewrap, the audit append and the
per-transaction retention purge.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeAlias, TypeVar

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from vault.errors import (
    StoreUnavailableError,
    VaultError,
)
from vault.storage.base import (
    AUDIT_KEY_NAME,
    AuditHead,
    CommitObserver,
    InsertOutcome,
    InsertStatus,
    RewrapRow,
    RewrapUpdate,
    TokenRecord,
)
from vault.storage.postgres_open import (
    COMMAND_TIMEOUT,
    CONNECT_TIMEOUT,
    is_postgres_url,
    migrate_schema,
    open_error,
    open_pool,
    redact_url,
    same_database,
)
from vault.storage.sql.audit_chain import chain_audits, check_head
from vault.storage.sql.audit_index import index_rows
from vault.storage.sql.batch import (
    AuditOp,
    InsertOp,
    ReadOp,
    answer_batch,
    drain,
    fail_batch,
    fail_waiting,
    queued_read,
    read_weight,
)
from vault.storage.sql.codecs import token_from_row, token_params
from vault.storage.sql.columns import AUDIT_COLUMNS, HELD, T_COLUMNS, TOKEN_COLUMNS
from vault.storage.sql.dialect import POSTGRES
from vault.storage.sql.retention import record_purge
from vault.storage.sql.store import SqlStore
from vault.storage.sql.tokens import apply_inserts, delete_unheld
from vault.storage.sql.tx import Abort, Mode, Stmt, Tx, UniqueViolation, run

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
_CONNECT_TIMEOUT = CONNECT_TIMEOUT
_COMMAND_TIMEOUT = COMMAND_TIMEOUT

_SELECT_TOKENS = f"SELECT {TOKEN_COLUMNS} FROM tokens WHERE token = ANY($1::text[])"  # noqa: S608
_INSERTED = InsertOutcome(InsertStatus.INSERTED)
_TOKEN_TYPES = (
    "text", "text", "integer", "integer", "bigint", "bytea", "bytea", "boolean", "bytea",
    "text", "bytea", "double precision", "double precision",
)  # fmt: skip
_TOKEN_WIDTH = len(_TOKEN_TYPES)
_AUDIT_TYPES = (
    "bigint", "double precision", "text", "text", "text", "text", "text", "text", "text",
    "text", "text", "text", "bytea",
)  # fmt: skip
_AUDIT_WIDTH = len(_AUDIT_TYPES)


def _unnest(types: Sequence[str], first: int) -> str:
    """``unnest($first::t1[], ...)``: one array parameter per column."""
    return "unnest(" + ", ".join(f"${first + i}::{t}[]" for i, t in enumerate(types)) + ")"


# The plain group commit: the rows and the key-usage counters in one statement.
_INSERT_PLAIN = (
    f"WITH ins AS (INSERT INTO tokens ({TOKEN_COLUMNS}) "  # noqa: S608 - constant
    f"SELECT * FROM {_unnest(_TOKEN_TYPES, 1)}), "
    "used AS (UPDATE key_versions AS k SET encryptions = k.encryptions + u.n "
    f"FROM unnest(${_TOKEN_WIDTH + 1}::bigint[], ${_TOKEN_WIDTH + 2}::bigint[]) AS u(v, n) "
    "WHERE k.version = u.v) SELECT 1"
)
# BEGIN and the head's lock in one simple query (no parameters: one round trip).
_LOCK_HEAD = "BEGIN; SELECT 1 FROM audit_head WHERE id = 1 FOR UPDATE"
# The head, the newest record and whether an audit key exists (one row, always).
_AUDIT_STATE = (
    "SELECT h.seq, h.mac, l.seq, l.mac, "
    "EXISTS (SELECT 1 FROM service_keys WHERE name = $1) "
    "FROM (SELECT 1) AS one LEFT JOIN audit_head AS h ON h.id = 1 "
    "LEFT JOIN LATERAL (SELECT seq, mac FROM audit_log ORDER BY seq DESC LIMIT 1) AS l ON true"
)
_HEAD_SEQ, _HEAD_MAC = _AUDIT_WIDTH + 4, _AUDIT_WIDTH + 5
# The records, their reveal index rows and the head, in one statement (the head's
# forward-only trigger and the append-only triggers fire as for separate statements).
_APPEND_RECORDS = (
    f"WITH a AS (INSERT INTO audit_log ({AUDIT_COLUMNS}) "  # noqa: S608 - constant
    f"SELECT * FROM {_unnest(_AUDIT_TYPES, 1)}), "
    "i AS (INSERT INTO audit_tokens (tenant, token, seq) "
    f"SELECT * FROM {_unnest(('text', 'text', 'bigint'), _AUDIT_WIDTH + 1)}), "
)
_HEAD_MOVE = f"UPDATE audit_head SET seq = ${_HEAD_SEQ}, mac = ${_HEAD_MAC} WHERE id = 1"  # noqa: S608
_HEAD_FIRST = f"INSERT INTO audit_head (id, seq, mac) VALUES (1, ${_HEAD_SEQ}, ${_HEAD_MAC})"  # noqa: S608
_APPEND_AUDIT = f"{_APPEND_RECORDS}h AS ({_HEAD_MOVE} RETURNING 1) SELECT count(*) FROM h"  # noqa: S608
_APPEND_FIRST_AUDIT = f"{_APPEND_RECORDS}h AS ({_HEAD_FIRST} RETURNING 1) SELECT count(*) FROM h"  # noqa: S608
# Races that a fresh run of the same transaction resolves.
_RETRYABLE = (
    asyncpg.UniqueViolationError,
    asyncpg.SerializationError,
    asyncpg.DeadlockDetectedError,
)


_Op = InsertOp | AuditOp


async def _run_tx(conn: _Conn, tx: Tx[T], *, bare_guard: bool = False) -> T:
    """Drive a transaction of sql/tx.py on a connection; returns its result. With
    ``bare_guard`` guarded statements run without their savepoint: a violation then
    fails the whole transaction (the caller runs it again, resolving first)."""
    try:
        stmt = next(tx)
        while True:
            try:
                result = await (_statement if bare_guard else _execute)(conn, stmt)
            except asyncpg.UniqueViolationError:
                if bare_guard or not stmt.guarded:
                    raise  # (bare: the transaction is aborted, the caller runs it again)
                stmt = tx.throw(UniqueViolation())
            else:
                stmt = tx.send(result)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


async def _execute(conn: _Conn, stmt: Stmt) -> Any:
    if not stmt.guarded:
        return await _statement(conn, stmt)
    async with conn.transaction():  # a savepoint: a violation undoes only this statement
        return await _statement(conn, stmt)


async def _statement(conn: _Conn, stmt: Stmt) -> Any:
    if stmt.mode is Mode.ROWS:
        return await conn.fetch(stmt.sql, *stmt.params)
    if stmt.mode is Mode.COUNT:
        return _rowcount(await conn.execute(stmt.sql, *stmt.params))
    await conn.executemany(stmt.sql, stmt.params)
    return None


def _rewrap(updates: Sequence[RewrapUpdate], encryptions: int) -> Tx[int]:
    done = 0
    if updates:
        # One statement for the batch; each row changes only if it still holds its old
        # version and ciphertext (compare-and-set).
        done = yield run(
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
    if updates and encryptions:
        yield run(
            "UPDATE key_versions SET encryptions = encryptions + $1 WHERE version = $2",
            encryptions,
            updates[0].new_version,
        )
    return done


def _purge_retained_batch(
    tenant: str, kind: int, created_before: float, now: float, limit: int, window: tuple[int, int]
) -> Tx[tuple[int, int]]:
    """One transaction: up to ``limit`` unheld rows in the id window (after, boundary];
    returns how many went and the id to go on after (``boundary`` once none are left)."""
    after, boundary = window
    due = yield Stmt(
        "SELECT id FROM tokens WHERE id > $1 AND id <= $2 AND tenant = $3 "  # noqa: S608 - constant
        f"AND kind = $4 AND created_at < $5 AND NOT ({HELD}) ORDER BY id LIMIT $6",
        (after, boundary, tenant, kind, created_before, limit),
        Mode.ROWS,
    )
    if not due:
        return 0, boundary
    ids = [int(r[0]) for r in due]
    deleted, _ = yield from delete_unheld(POSTGRES, ids)
    if deleted:
        yield from record_purge(POSTGRES, tenant, kind, len(deleted), now)
    return len(deleted), ids[-1] if len(ids) == limit else boundary


async def _audit_state(conn: _Conn) -> tuple[AuditHead | None, tuple[int, bytes] | None, bool]:
    """Read the head, the newest row's (seq, mac) and whether an audit key exists, in
    one statement. The caller holds the head row's lock (_LOCK_HEAD) already: this is
    a statement of its own after the lock, so under READ COMMITTED it sees the rows the
    previous holder committed (a join with the locking read itself would not)."""
    row = await conn.fetchrow(_AUDIT_STATE, AUDIT_KEY_NAME)
    assert row is not None  # noqa: S101 - the statement returns one row
    return (
        AuditHead(int(row[0]), bytes(row[1])) if row[0] is not None else None,
        (int(row[2]), bytes(row[3])) if row[2] is not None else None,
        bool(row[4]),
    )


def _columns(params: Sequence[Sequence[Any]], width: int) -> list[list[Any]]:
    """Row tuples as one list per column (the arrays an unnest() insert takes)."""
    return [[p[i] for p in params] for i in range(width)] if params else [[]] * width


async def _apply_audits(conn: _Conn, ops: list[AuditOp]) -> None:
    """Chain every waiting op's rows onto the newest stored record (in the caller's
    transaction, which holds the head's lock and only audit appends: a failure fails
    just those). A head that does not seal the newest row fails them
    (AuditChainBrokenError), unrepaired. Two statements: the state read, then one
    write of the records, their reveal index (sql/audit_index.py) and the head."""
    head, last, has_key = await _audit_state(conn)
    # Whether an audit key exists matters only without a head (keyed: broken; bare: the
    # first append).
    seq, prev = check_head(head, last, ops[0].seal, keyed=head is None and has_key)
    chain = chain_audits(seq, prev, [(op.rows, op.seal) for op in ops])
    index = index_rows(chain.stored)
    # A bare store's first append (no audit key, so no genesis head) inserts the head:
    # a concurrent first appender makes that fail on the key, and the append is retried.
    moved = await conn.fetchval(
        _APPEND_AUDIT if head is not None else _APPEND_FIRST_AUDIT,
        *_columns(chain.params, _AUDIT_WIDTH),
        *_columns(index, 3),
        chain.head_seq,
        chain.head_mac,
    )
    if moved != 1:  # the locked head row is there: only a changed schema gets here
        raise StoreUnavailableError("the audit head did not move")
    for op, stored in zip(ops, chain.stored, strict=True):
        op.stored = stored


async def _in_audit_tx(conn: _Conn, ops: list[AuditOp]) -> None:
    """The audit append's transaction: BEGIN and the head's lock in one round trip (a
    simple query without parameters), the state read, the write, COMMIT."""
    await conn.execute(_LOCK_HEAD)
    try:
        await _apply_audits(conn, ops)
    except BaseException:
        if not conn.is_closed() and conn.is_in_transaction():
            await conn.execute("ROLLBACK")
        raise
    await conn.execute("COMMIT")


async def _insert_plain(conn: _Conn, inserts: list[InsertOp]) -> int:
    """The common group commit (no deterministic record, no request id) in one
    statement and one round trip, outside an explicit transaction (a single statement
    is atomic): every record inserted and the key-usage counters raised. A taken token
    fails the whole statement (nothing written): the caller resolves, then inserts."""
    records = [r for op in inserts for r in op.records]
    usage: dict[int, int] = {}
    for op in inserts:
        for version, count in op.encryptions.items():
            usage[version] = usage.get(version, 0) + count
    versions = sorted(usage)
    await conn.execute(
        _INSERT_PLAIN,
        *_columns([token_params(r) for r in records], _TOKEN_WIDTH),
        versions,
        [usage[v] for v in versions],
    )
    for op in inserts:
        op.outcomes = [_INSERTED] * len(op.records)
    return len(records)


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


class PostgresStore(SqlStore):
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
        self._read_queue: asyncio.Queue[ReadOp | None] = asyncio.Queue()
        self._readers: list[asyncio.Task[None]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False

    def __repr__(self) -> str:
        return f"PostgresStore({redact_url(self._url)})"

    async def _rows(self, sql: str, *args: Any) -> list[Any]:
        return list(await self._fetch(sql, *args))

    # -- lifecycle ---------------------------------------------------------------

    async def open(self) -> None:
        pool = await open_pool(
            self._url, max_size=self._pool_size, application_name="vault", migrate=migrate_schema
        )
        self._pool = pool
        self._tasks = [
            *(
                asyncio.create_task(
                    drain(self._write_queue, self._commit_batch, _MAX_WRITE_BATCH),
                    name=f"postgres-writer-{i}",
                )
                for i in range(self._writers)
            ),
            asyncio.create_task(
                drain(self._audit_queue, self._commit_batch, _MAX_WRITE_BATCH),
                name="postgres-audit",
            ),
        ]
        self._readers = [
            asyncio.create_task(
                drain(self._read_queue, self._answer_reads, _MAX_READ_BATCH, read_weight),
                name=f"postgres-reader-{i}",
            )
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
        for queue in (self._read_queue, self._write_queue, self._audit_queue):
            fail_waiting(queue)
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
        (self._audit_queue if isinstance(op, AuditOp) else self._write_queue).put_nowait(op)

    async def _commit_batch(self, batch: list[_Op]) -> None:
        inserts = [op for op in batch if isinstance(op, InsertOp)]
        audits = [op for op in batch if isinstance(op, AuditOp)]
        try:
            inserted = await self._run_batch(inserts, audits)
        except Exception as exc:  # noqa: BLE001 - every waiting caller gets UNAVAILABLE
            fail_batch(batch, exc)
            return
        answer_batch(batch, inserted, self._on_commit)

    async def _run_batch(self, inserts: list[InsertOp], audits: list[AuditOp]) -> int:
        """The group's one transaction, run again after a race; returns rows inserted."""
        pool = self._pool
        assert pool is not None  # noqa: S101 - open() ran
        # Optimistic first run: the batch's one insert without a savepoint around it (two
        # round trips fewer; a plain batch is one statement, _insert_plain); a taken token
        # aborts it, and the run again resolves collisions first (nothing was answered:
        # callers wait for a commit).
        optimistic = True
        plain = not any(r.deterministic or r.request_id for op in inserts for r in op.records)
        for attempt in range(_RETRIES):
            try:
                async with pool.acquire(timeout=_CONNECT_TIMEOUT) as conn:
                    # (A batch is all audit appends or all inserts: see _submit.)
                    if audits:
                        await _in_audit_tx(conn, audits)
                        return 0
                    if optimistic and plain:
                        return await _insert_plain(conn, inserts)
                    async with conn.transaction():
                        tx = apply_inserts(POSTGRES, inserts, optimistic=optimistic)
                        return await _run_tx(conn, tx, bare_guard=optimistic)
            except _RETRYABLE as exc:
                if attempt == _RETRIES - 1:
                    raise
                if optimistic and isinstance(exc, asyncpg.UniqueViolationError):
                    optimistic = False
                    continue
                await asyncio.sleep(0.001 * 2**attempt)
        raise AssertionError  # pragma: no cover - the loop returns or raises

    # -- the readers -------------------------------------------------------------

    async def _answer_reads(self, batch: list[ReadOp]) -> None:
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

    async def _write(self, tx: Callable[[], Tx[T]], *, retry_unique: bool = False) -> T:
        """Run ``tx()`` in a transaction of its own; a fresh ``tx()`` after a race."""
        pool = self._ready_pool()
        retryable: tuple[type[BaseException], ...] = _RETRYABLE if retry_unique else _RETRYABLE[1:]
        for attempt in range(_RETRIES):
            try:
                async with pool.acquire(timeout=_CONNECT_TIMEOUT) as conn, conn.transaction():
                    return await _run_tx(conn, tx())
            except Abort as abort:  # rolled back: the transaction block saw it leave
                return abort.value  # type: ignore[no-any-return]
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

    # -- what is PostgreSQL's own -------------------------------------------------

    async def get_tokens(self, tokens: Sequence[str]) -> list[TokenRecord | None]:
        if not tokens:
            return []
        if self._closed or not self._readers:
            raise StoreUnavailableError("the store is not open")
        return await queued_read(self._read_queue, tokens)

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
        return await self._write(lambda: _rewrap(updates, encryptions))

    async def purge_retained(
        self, tenant: str, kind: int, created_before: float, now: float, limit: int
    ) -> int:
        boundary = await self._age_boundary(created_before)
        purged, after = 0, 0
        while after < boundary:
            batch = functools.partial(
                _purge_retained_batch, tenant, kind, created_before, now, limit, (after, boundary)
            )
            done, after = await self._write(batch, retry_unique=True)
            purged += done
        return purged


def _rowcount(status: str) -> int:
    """Rows touched, from a command tag such as ``DELETE 3`` or ``UPDATE 1``."""
    tail = status.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0
