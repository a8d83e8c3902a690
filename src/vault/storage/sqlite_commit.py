"""The SQLite group commit, run on the writer connection's thread: one transaction
for every write waiting (audit appends first, then the token inserts, then each other
write in a savepoint of its own), driving the statement generators of sql/tx.py.

Every statement here is a release and re-take of the GIL on the writer thread, which
the event loop competes for; so inserts go as multi-row statements (``_insert_many``),
a guarded statement that runs as one statement needs no savepoint (a statement that
breaks a constraint undoes itself), and the audit state is read in one query.
"""

from __future__ import annotations

import contextlib
import functools
import sqlite3
from collections.abc import Sequence
from typing import Any, TypeVar

from vault.storage.base import AUDIT_KEY_NAME, AuditHead, AuditRow
from vault.storage.sql.audit_chain import chain_audits, check_head
from vault.storage.sql.audit_index import index_stmt
from vault.storage.sql.batch import AuditOp, InsertOp, WriteOp
from vault.storage.sql.codecs import chunks
from vault.storage.sql.columns import AUDIT_COLUMNS
from vault.storage.sql.dialect import SQLITE
from vault.storage.sql.tokens import apply_inserts
from vault.storage.sql.tx import Abort, Mode, Stmt, Tx, UniqueViolation

__all__ = ["MAX_PARAMS", "commit_sync", "run_tx"]

T = TypeVar("T")

# Most host parameters per statement we use (SQLite's limit is 32766).
MAX_PARAMS = 900

_INSERT_AUDIT = SQLITE.insert("audit_log", AUDIT_COLUMNS)
_PUT_AUDIT_HEAD = SQLITE.upsert("audit_head", "id, seq, mac", "id")
# The stored head, the newest row's (seq, mac) and whether the audit key exists: one
# statement (each statement on the writer thread is a GIL release and re-take).
_AUDIT_STATE = (
    "SELECT h.seq, h.mac, l.seq, l.mac, "
    "EXISTS (SELECT 1 FROM service_keys WHERE name = ?) "
    "FROM (SELECT 1) LEFT JOIN audit_head h ON h.id = 1 "
    "LEFT JOIN (SELECT seq, mac FROM audit_log ORDER BY seq DESC LIMIT 1) l"
)


def _audit_state(
    conn: sqlite3.Connection,
) -> tuple[AuditHead | None, tuple[int, bytes] | None, bool]:
    """The stored head, the newest row's (seq, mac) and whether the audit key exists,
    read in the write transaction."""
    hs, hm, ls, lm, keyed = conn.execute(_AUDIT_STATE, (AUDIT_KEY_NAME,)).fetchone()
    return (
        AuditHead(int(hs), bytes(hm)) if hs is not None else None,
        (int(ls), bytes(lm)) if ls is not None else None,
        bool(keyed),
    )


def _apply_audits(conn: sqlite3.Connection, ops: list[AuditOp]) -> None:
    """Chain every waiting op's rows onto the newest stored record.

    The previous MAC is read here, inside the write transaction (BEGIN IMMEDIATE holds
    the write lock), so vault processes sharing the file extend one linear chain. This
    runs first in the group's transaction, so no savepoint: a failure before the first
    write (a broken chain) leaves nothing to undo, and one after it rolls the whole
    (still audit-only) transaction back and begins it again for the other ops.
    """
    written = False
    try:
        head, last, keyed = _audit_state(conn)
        seq, prev = check_head(head, last, ops[0].seal, keyed=keyed)
        chain = chain_audits(seq, prev, [(op.rows, op.seal) for op in ops])
        written = True
        _insert_many(conn, _INSERT_AUDIT, chain.params)
        index_audits(conn, chain.stored)  # h14a: the reveal index (sql/audit_index.py)
        conn.execute(_PUT_AUDIT_HEAD, (1, chain.head_seq, chain.head_mac))
    except Exception as exc:  # noqa: BLE001 - handed to every audit op's caller
        if written:
            conn.execute("ROLLBACK")
            conn.execute("BEGIN IMMEDIATE")
        for op in ops:
            op.stored = []
            op.error = exc
        return
    for op, stored in zip(ops, chain.stored, strict=True):
        op.stored = stored


def index_audits(conn: sqlite3.Connection, stored: list[list[AuditRow]]) -> None:
    """Index the reveal records just chained (same transaction; sql/audit_index.py)."""
    stmt = index_stmt(SQLITE, stored)
    if stmt is not None:
        _insert_many(conn, stmt.sql, stmt.params)


@functools.lru_cache(maxsize=256)
def _multi_row(sql: str, count: int) -> tuple[str, int] | None:
    """``INSERT … VALUES (?, …)`` as one statement of ``count`` rows, and the rows one
    such statement may hold; None for any other statement (an upsert, an UPDATE)."""
    head, sep, values = sql.rpartition(" VALUES ")
    if not sep or not head.startswith("INSERT INTO ") or not values.startswith("("):
        return None
    if not values.endswith(")") or values.count("(") != 1:
        return None
    per_stmt = max(1, MAX_PARAMS // (values.count("?") or 1))
    return f"{head} VALUES {','.join([values] * min(count, per_stmt))}", per_stmt


def _insert_many(conn: sqlite3.Connection, sql: str, params: Sequence[Sequence[Any]]) -> bool:
    """executemany, as multi-row INSERTs where it can: one SQLite step (one GIL release
    on this thread) for up to ``MAX_PARAMS`` parameters instead of one per row.
    Returns whether it ran as one statement (atomic: a constraint it breaks undoes it all)."""
    multi = _multi_row(sql, len(params)) if len(params) > 1 else None
    if multi is None:
        conn.executemany(sql, params)
        return len(params) <= 1
    per_stmt = multi[1]
    for chunk in chunks(params, per_stmt):
        text = multi[0] if len(chunk) == per_stmt else _multi_row(sql, len(chunk))[0]  # type: ignore[index]
        conn.execute(text, [v for row in chunk for v in row])
    return len(params) <= per_stmt


def run_tx(conn: sqlite3.Connection, tx: Tx[T]) -> T:
    """Drive a transaction of sql/tx.py on the writer thread; returns its result."""
    try:
        stmt = next(tx)
        while True:
            try:
                result = _execute(conn, stmt)
            except sqlite3.IntegrityError:
                if not stmt.guarded:
                    raise
                stmt = tx.throw(UniqueViolation())
            else:
                stmt = tx.send(result)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


def _execute(conn: sqlite3.Connection, stmt: Stmt) -> Any:
    if not stmt.guarded:
        return _statement(conn, stmt)
    if stmt.mode is not Mode.MANY or _single_statement(stmt):
        # One statement is atomic (SQLite's ABORT undoes what it did on a constraint
        # failure): no savepoint needed for "a violation undoes only this statement".
        return _statement(conn, stmt)
    # Several statements: a savepoint, so a constraint they break undoes all of them.
    conn.execute("SAVEPOINT guard")
    try:
        result = _statement(conn, stmt)
    except sqlite3.IntegrityError:
        conn.execute("ROLLBACK TO guard")
        conn.execute("RELEASE guard")
        raise
    conn.execute("RELEASE guard")
    return result


def _single_statement(stmt: Stmt) -> bool:
    """Whether an executemany runs as one statement (see _insert_many)."""
    if len(stmt.params) <= 1:
        return True
    multi = _multi_row(stmt.sql, len(stmt.params))
    return multi is not None and len(stmt.params) <= multi[1]


def _statement(conn: sqlite3.Connection, stmt: Stmt) -> Any:
    if stmt.mode is Mode.ROWS:
        return conn.execute(stmt.sql, stmt.params).fetchall()
    if stmt.mode is Mode.COUNT:
        return conn.execute(stmt.sql, stmt.params).rowcount
    _insert_many(conn, stmt.sql, stmt.params)
    return None


def commit_sync(
    conn: sqlite3.Connection,
    inserts: list[InsertOp],
    generics: list[WriteOp],
    audits: list[AuditOp],
) -> int:
    """One group commit, on the connection's thread. Returns the rows inserted."""
    inserted = 0
    conn.execute("BEGIN IMMEDIATE")
    try:
        # Audits first: they need no savepoint there (see _apply_audits).
        if audits:
            _apply_audits(conn, audits)
        if inserts:
            inserted = run_tx(conn, apply_inserts(SQLITE, inserts))
        for gop in generics:
            conn.execute("SAVEPOINT op")
            try:
                gop.result = run_tx(conn, gop.tx())
            except Abort as abort:
                gop.result = abort.value
                conn.execute("ROLLBACK TO op")
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
