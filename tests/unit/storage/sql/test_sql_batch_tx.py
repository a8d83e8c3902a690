"""The shared batcher, the statement-generator transactions and the dialect's lists,
run through a real SQLite connection and real asyncio queues."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from vault.errors import StoreUnavailableError
from vault.storage.sql.batch import WriteOp, answer_batch, drain, fail_batch, fail_waiting
from vault.storage.sql.dialect import POSTGRES, SQLITE
from vault.storage.sql.tx import Tx, UniqueViolation, guarded, many, rows, run
from vault.storage.sqlite_commit import run_tx


def _noop() -> Tx[None]:
    yield run("SELECT 1")


async def test_drain_takes_every_waiting_op_in_one_batch_up_to_the_bound() -> None:
    queue: asyncio.Queue[int | None] = asyncio.Queue()
    for n in range(7):
        queue.put_nowait(n)
    queue.put_nowait(None)
    batches: list[list[int]] = []

    async def handle(batch: list[int]) -> None:
        batches.append(batch)

    await drain(queue, handle, limit=3)
    assert batches == [[0, 1, 2], [3, 4, 5], [6]]
    assert queue.empty()


async def test_drain_stops_at_its_marker_after_handling_what_came_before() -> None:
    queue: asyncio.Queue[int | None] = asyncio.Queue()
    for item in (1, 2, None, 3):
        queue.put_nowait(item)
    batches: list[list[int]] = []

    async def handle(batch: list[int]) -> None:
        batches.append(batch)

    await drain(queue, handle, limit=10)
    assert batches == [[1, 2]]
    assert queue.get_nowait() == 3  # left for another drainer (or fail_waiting)


async def test_drain_weighs_ops() -> None:
    queue: asyncio.Queue[list[str] | None] = asyncio.Queue()
    for item in (["a"] * 4, ["b"] * 4, ["c"], None):
        queue.put_nowait(item)
    sizes: list[int] = []

    async def handle(batch: list[list[str]]) -> None:
        sizes.append(sum(len(op) for op in batch))

    await drain(queue, handle, limit=5, weight=len)
    assert sizes == [8, 1]


async def test_a_failed_batch_fails_every_caller_and_a_committed_one_answers_each() -> None:
    loop = asyncio.get_running_loop()
    failed = [WriteOp(_noop, loop.create_future()) for _ in range(3)]
    fail_batch(failed, RuntimeError("boom"))
    for op in failed:
        with pytest.raises(StoreUnavailableError):
            await op.future
    refused = WriteOp(_noop, loop.create_future(), error=ValueError("its own"))
    done = WriteOp(_noop, loop.create_future(), result=7)
    committed: list[int] = []
    answer_batch([refused, done], 2, committed.append)
    assert committed == [2]
    assert await done.future == 7
    with pytest.raises(ValueError, match="its own"):
        await refused.future


async def test_a_failing_commit_observer_does_not_stop_the_answers() -> None:
    op = WriteOp(_noop, asyncio.get_running_loop().create_future(), result=1)

    def broken(_: int) -> None:
        raise RuntimeError

    answer_batch([op], 1, broken)
    assert await op.future == 1


async def test_ops_left_queued_are_told_the_store_is_closing() -> None:
    queue: asyncio.Queue[WriteOp | None] = asyncio.Queue()
    op = WriteOp(_noop, asyncio.get_running_loop().create_future())
    queue.put_nowait(None)
    queue.put_nowait(op)
    fail_waiting(queue)
    with pytest.raises(StoreUnavailableError, match="closing"):
        await op.future


def _insert_twice(name: str) -> Tx[tuple[int, bool]]:
    inserted = yield run("INSERT INTO t (name) VALUES (?)", name)
    try:
        yield guarded(run("INSERT INTO t (name) VALUES (?)", name))
    except UniqueViolation:
        taken = True
    else:
        taken = False
    return inserted, taken


def test_a_guarded_unique_violation_undoes_only_its_statement() -> None:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute("CREATE TABLE t (name TEXT UNIQUE)")
    conn.execute("BEGIN")
    assert run_tx(conn, _insert_twice("a")) == (1, True)
    conn.execute("COMMIT")
    assert conn.execute("SELECT name FROM t").fetchall() == [("a",)]


def test_an_unguarded_unique_violation_fails_the_transaction() -> None:
    def twice() -> Tx[None]:
        yield many("INSERT INTO t (name) VALUES (?)", [("a",), ("a",)])

    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute("CREATE TABLE t (name TEXT UNIQUE)")
    with pytest.raises(sqlite3.IntegrityError):
        run_tx(conn, twice())


def test_rows_are_sent_back_into_the_transaction() -> None:
    def read() -> Tx[list[int]]:
        found = yield rows("SELECT value FROM json_each(?) ORDER BY value", "[3,1,2]")
        return [int(r[0]) for r in found]

    conn = sqlite3.connect(":memory:", isolation_level=None)
    assert run_tx(conn, read()) == [1, 2, 3]


def test_lists_are_placeholder_chunks_on_sqlite_and_one_array_on_postgres() -> None:
    values = list(range(2000))
    chunks = SQLITE.any_of("id", values, "bigint")
    assert [len(params) for _, params in chunks] == [900, 900, 200]
    assert chunks[0][0] == f"id IN ({','.join('?' * 900)})"
    assert POSTGRES.any_of("id", values, "bigint") == [("id = ANY(?::bigint[])", [values])]


def test_tuple_lists_are_values_on_sqlite_and_unnest_on_postgres() -> None:
    pairs = [("shop", "r1"), ("shop", "r2")]
    assert SQLITE.tuple_in("tenant, request_id", ("text", "text"), pairs) == [
        ("(tenant, request_id) IN (VALUES (?,?),(?,?))", ["shop", "r1", "shop", "r2"])
    ]
    cond, params = POSTGRES.tuple_in("tenant, request_id", ("text", "text"), pairs)[0]
    assert POSTGRES.sql(cond) == (
        "(tenant, request_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))"
    )
    assert params == [["shop", "shop"], ["r1", "r2"]]


def test_flags_and_locks_differ_by_dialect() -> None:
    assert SQLITE.flag("deterministic") == "deterministic = 1"
    assert POSTGRES.flag("deterministic") == "deterministic"
    assert SQLITE.lock("FOR UPDATE") == ""
    assert POSTGRES.lock("FOR UPDATE") == " FOR UPDATE"
