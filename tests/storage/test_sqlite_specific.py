"""What only the SQLite store promises: pragmas, migration bookkeeping, group commit.

Everything the Store protocol promises is in the contract suite (test_store_*.py);
this file alone may reach into SqliteStore internals.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import sqlite3
import threading

import aiosqlite
import pytest

from vault.errors import FailedPreconditionError, StoreUnavailableError
from vault.storage import sqlite as sqlite_module
from vault.storage.base import AuditRow, InsertStatus, TokenRecord
from vault.storage.sqlite import SqliteStore, migrations

NOW = 1_800_000_000.0  # the suite's fixed clock (as in conftest.py)


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "vault.db"


@pytest.fixture
async def sqlite_store(db_path):
    store = SqliteStore(db_path)
    await store.open()
    yield store
    await store.close()


def applied_migrations(path):
    conn = sqlite3.connect(path)
    try:
        return conn.execute(
            "SELECT version, applied_at FROM schema_migrations ORDER BY version"
        ).fetchall()
    finally:
        conn.close()


async def pragma(conn, name):
    async with conn.execute(f"PRAGMA {name}") as cur:
        row = await cur.fetchone()
    return row[0]


def worker_threads():
    return {t for t in threading.enumerate() if "_connection_worker_thread" in t.name}


@pytest.fixture(autouse=True)
async def close_leaked_connections():
    """Close connections a failing open() dropped, so such a bug fails its test only.

    A dropped aiosqlite connection keeps a non-daemon worker thread; the failed test's
    traceback keeps the connection alive, and the whole pytest run would hang at exit.
    """
    before = worker_threads()
    yield
    leaked = worker_threads() - before
    if not leaked:
        return
    for obj in gc.get_objects():
        if isinstance(obj, aiosqlite.Connection) and obj._thread in leaked:
            with contextlib.suppress(Exception):
                await obj.close()


@pytest.mark.parametrize("connection", ["_writer", "_reader"])
async def test_connection_pragmas(sqlite_store, connection):
    conn = getattr(sqlite_store, connection)
    assert conn is not None
    assert await pragma(conn, "journal_mode") == "wal"
    assert await pragma(conn, "synchronous") == 2  # FULL: durable before acknowledged
    assert await pragma(conn, "secure_delete") == 1
    assert await pragma(conn, "foreign_keys") == 1


async def test_reader_connection_cannot_write(sqlite_store):
    assert await pragma(sqlite_store._reader, "query_only") == 1
    assert await pragma(sqlite_store._writer, "query_only") == 0


# Migration numbers a parallel branch owns until it is merged (0009 audit, 0010 the
# tokenize budget, while 0011 routes is here; 0012 another branch of issue 14, while
# 0013 audit_tokens is here); once merged the set is empty again.
RESERVED_ELSEWHERE: set[int] = set()


async def test_migrations_are_numbered_from_one_without_gaps():
    numbers = [number for number, _ in migrations("sqlite")]
    assert numbers == sorted(set(numbers))
    assert set(range(1, numbers[-1] + 1)) - set(numbers) <= RESERVED_ELSEWHERE


async def test_reopening_applies_no_migration_twice(db_path):
    expected = [number for number, _ in migrations("sqlite")]
    store = SqliteStore(db_path)
    await store.open()
    await store.close()
    first = applied_migrations(db_path)
    assert [version for version, _ in first] == expected

    for _ in range(2):
        store = SqliteStore(db_path)
        await store.open()
        await store.close()
    # Same rows, same applied_at: nothing was run again.
    assert applied_migrations(db_path) == first


async def test_two_stores_starting_together_apply_each_migration_once(db_path):
    stores = [SqliteStore(db_path) for _ in range(4)]
    await asyncio.gather(*(s.open() for s in stores))
    await asyncio.gather(*(s.close() for s in stores))
    versions = [version for version, _ in applied_migrations(db_path)]
    assert versions == [number for number, _ in migrations("sqlite")]


async def test_failed_open_leaves_no_connection_behind(db_path):
    """open() that raises must not leave its connection (a non-daemon thread) open.

    A leaked aiosqlite connection keeps a worker thread alive; the process that gives
    up on a too-new schema then cannot exit cleanly.
    """
    store = SqliteStore(db_path)
    await store.open()
    await store.close()
    conn = sqlite3.connect(db_path)
    conn.execute("INSERT INTO schema_migrations (version, applied_at) VALUES (10000, 'test')")
    conn.commit()
    conn.close()

    before = worker_threads()
    newer = SqliteStore(db_path)
    try:
        with pytest.raises(FailedPreconditionError) as raised:
            await newer.open()
        assert raised.value.reason == "SCHEMA_TOO_NEW"
        await asyncio.sleep(0.05)  # give a stopping worker thread time to finish
        assert worker_threads() - before == set()
    finally:
        await newer.close()


# Made-up migrations numbered past the shipped ones (so the tests hold whatever is
# shipped): a build that ships them is simulated by patching `migrations`.
def _made_up(number: int) -> tuple[int, str]:
    return number, f"CREATE TABLE made_up_{number} (id INTEGER PRIMARY KEY);  -- a row id"


def _tables(path) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        conn.close()


async def test_a_migration_numbered_below_the_applied_ones_is_applied_later(db_path, monkeypatch):
    """A branch merged after later-numbered migrations were applied (as 0005 of the
    subjects branch after 0006-0008): its migration still runs, once."""
    shipped = migrations("sqlite")
    top = shipped[-1][0]
    early, late = _made_up(top + 2), _made_up(top + 1)
    monkeypatch.setattr(sqlite_module, "migrations", lambda _d: [*shipped, early])
    store = SqliteStore(db_path)
    await store.open()
    await store.close()
    before = applied_migrations(db_path)
    assert before[-1][0] == top + 2

    # The next build also ships `late`, numbered below the newest applied one.
    monkeypatch.setattr(sqlite_module, "migrations", lambda _d: [*shipped, late, early])
    for _ in range(2):  # applied once, then never again
        store = SqliteStore(db_path)
        await store.open()
        await store.close()
    after = applied_migrations(db_path)
    assert [v for v, _ in after] == [*(n for n, _ in shipped), top + 1, top + 2]
    assert [row for row in after if row[0] != top + 1] == before  # nothing else ran again
    assert f"made_up_{top + 1}" in _tables(db_path)


async def test_a_store_missing_a_shipped_migration_gets_it_on_open(db_path, monkeypatch):
    """A store made by a build without one migration (e.g. before the KEK branch was
    merged) gets exactly that one when a build shipping it opens the store."""
    shipped = migrations("sqlite")
    missing = 6  # 0006_kek_shares
    assert missing in dict(shipped)
    monkeypatch.setattr(
        sqlite_module, "migrations", lambda _d: [m for m in shipped if m[0] != missing]
    )
    store = SqliteStore(db_path)
    await store.open()
    await store.close()
    assert missing not in {v for v, _ in applied_migrations(db_path)}

    monkeypatch.setattr(sqlite_module, "migrations", lambda _d: shipped)
    store = SqliteStore(db_path)
    await store.open()
    try:
        assert await store.share_scheme() is None  # its table exists now
    finally:
        await store.close()
    assert [v for v, _ in applied_migrations(db_path)] == [n for n, _ in shipped]


async def test_an_unknown_number_below_the_latest_is_schema_too_new(db_path, monkeypatch):
    """Another build's migration (not shipped here, below our newest): refused, and
    nothing of ours is applied meanwhile."""
    shipped = migrations("sqlite")
    top = shipped[-1][0]
    store = SqliteStore(db_path)
    await store.open()
    await store.close()
    conn = sqlite3.connect(db_path)
    conn.execute("INSERT INTO schema_migrations (version, applied_at) VALUES (?, 'x')", (top + 1,))
    conn.commit()
    conn.close()
    before = applied_migrations(db_path)

    # This build ships top + 2 but not top + 1.
    monkeypatch.setattr(sqlite_module, "migrations", lambda _d: [*shipped, _made_up(top + 2)])
    newer = SqliteStore(db_path)
    try:
        with pytest.raises(FailedPreconditionError) as raised:
            await newer.open()
        assert raised.value.reason == "SCHEMA_TOO_NEW"
    finally:
        await newer.close()
    assert applied_migrations(db_path) == before  # its own newer one did not run
    assert f"made_up_{top + 2}" not in _tables(db_path)


async def test_open_waits_while_another_process_is_creating_the_store(db_path):
    """Two processes starting on a new file: one converts it to WAL while the other waits.

    The other process is simulated by a plain connection holding the write lock on the
    new (not yet WAL) file for 0.2 s, as a store does mid-way through its own open().
    The busy timeout must cover the switch to WAL too, so open() waits, then succeeds.
    """
    other = sqlite3.connect(db_path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    asyncio.get_running_loop().call_later(0.2, other.execute, "ROLLBACK")
    store = SqliteStore(db_path)
    try:
        await asyncio.wait_for(store.open(), timeout=5)
        assert await pragma(store._writer, "journal_mode") == "wal"
        assert await store.key_versions() == []
    finally:
        await store.close()
        other.close()


async def test_open_of_a_file_that_is_not_a_store(db_path):
    """Refused as a vault error, and no connection (a non-daemon thread) is left behind."""
    db_path.write_bytes(b"this is not a database " * 200)
    before = worker_threads()
    store = SqliteStore(db_path)
    try:
        with pytest.raises(FailedPreconditionError) as raised:
            await store.open()
        assert raised.value.reason == "STORE_OPEN_FAILED"
        await asyncio.sleep(0.05)  # give a stopping worker thread time to finish
        assert worker_threads() - before == set()
    finally:
        await store.close()


async def test_concurrent_inserts_share_commits(db_path):
    commits: list[int] = []
    store = SqliteStore(db_path, on_commit=commits.append)
    await store.open()
    try:
        await store.add_key_version(b"w1", "kek", NOW, primary=True)
        calls = [[_record(f"tok_{i}_{j}") for j in range(2)] for i in range(100)]
        await asyncio.gather(*(store.insert_tokens(c, NOW, {}) for c in calls))
    finally:
        await store.close()
    # The observer sees records per commit; together they are every inserted record,
    # and group commit put the 100 concurrent calls into a handful of transactions.
    assert sum(commits) == 200
    assert len(commits) <= 5


async def test_failing_commit_observer_does_not_wedge_the_writer(db_path):
    """The metrics observer is not part of the write: if it raises, writes still answer."""

    def broken_observer(count: int) -> None:
        raise RuntimeError("metrics backend down")

    store = SqliteStore(db_path, on_commit=broken_observer)
    await store.open()
    try:
        await store.add_key_version(b"w1", "kek", NOW, primary=True)
        first, second = _record("tok_first"), _record("tok_second")
        [outcome] = await asyncio.wait_for(store.insert_tokens([first], NOW, {}), timeout=1)
        assert outcome.status is InsertStatus.INSERTED
        [outcome] = await asyncio.wait_for(store.insert_tokens([second], NOW, {}), timeout=1)
        assert outcome.status is InsertStatus.INSERTED
        assert await store.get_tokens(["tok_first", "tok_second"]) == [first, second]
    finally:
        await asyncio.wait_for(store.close(), timeout=5)


def _record(token):
    return TokenRecord(
        token=token,
        tenant="tenant-a",
        kind=1,
        token_format=1,
        key_version=1,
        ciphertext=b"ct-" + token.encode(),
        fingerprint=b"fp-" + token.encode(),
        deterministic=False,
        subject_ref=None,
        request_id=None,
        request_hash=None,
        created_at=NOW,
        expires_at=None,
    )


async def test_inline_and_threaded_reads_answer_alike(db_path):
    """Small lookups run on the event loop's connection, large ones on the reader
    thread; both must give the same rows, in order, None where absent."""
    store = SqliteStore(db_path, inline_read_max=4)
    await store.open()
    try:
        await store.add_key_version(b"w1", "kek", NOW, primary=True)
        records = [_record(f"{4000000000000000 + i:016d}") for i in range(20)]
        await store.insert_tokens(records, NOW, {})
        wanted = [records[3].token, "9999999999999999", records[0].token]
        small = await store.get_tokens(wanted)  # 3 <= 4: inline
        large = await store.get_tokens(wanted + [r.token for r in records[5:15]])  # threaded
        assert small == [records[3], None, records[0]]
        assert large[:3] == small
        assert large[3:] == records[5:15]
    finally:
        await store.close()


async def test_inline_read_falls_back_to_the_thread_when_busy(db_path, monkeypatch):
    store = SqliteStore(db_path)
    await store.open()
    try:
        await store.add_key_version(b"w1", "kek", NOW, primary=True)
        record = _record("4000000000000001")
        await store.insert_tokens([record], NOW, {})

        def busy(_tokens):
            raise sqlite3.OperationalError("database is locked")

        monkeypatch.setattr(store, "_read_inline", busy)
        assert await store.get_tokens([record.token]) == [record]
    finally:
        await store.close()


def _audit_row(n: int):
    return AuditRow(0, NOW, f"c{n}", "t", "token.reveal", (), "", "ok", "", "", "", (), b"")


def _seal(prev: bytes, content: bytes) -> bytes:
    return hashlib.sha256(prev + content).digest()


async def test_audit_log_refuses_update_and_delete(sqlite_store, db_path):
    await sqlite_store.append_audit([_audit_row(1), _audit_row(2)], _seal)
    conn = sqlite3.connect(db_path)
    try:
        for statement in (
            "UPDATE audit_log SET purpose = 'forged' WHERE seq = 1",
            "DELETE FROM audit_log WHERE seq = 2",
        ):
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                conn.execute(statement)
    finally:
        conn.close()
    assert [r.caller for r in await sqlite_store.audit_records(0, 10)] == ["c1", "c2"]


async def test_concurrent_audit_appends_share_commits(db_path, monkeypatch):
    commits = []
    real = sqlite_module.commit_sync

    def counting(conn, inserts, generics, audits):
        commits.append(len(audits))
        return real(conn, inserts, generics, audits)

    monkeypatch.setattr(sqlite_module, "commit_sync", counting)
    store = SqliteStore(db_path)
    await store.open()
    try:
        await asyncio.gather(*(store.append_audit([_audit_row(n)], _seal) for n in range(100)))
    finally:
        await store.close()
    assert sum(commits) == 100
    assert len(commits) < 100  # coalesced: fewer transactions (and fsyncs) than appends


async def test_failed_audit_append_leaves_other_writes_of_the_commit(sqlite_store, make_record):
    def broken_seal(prev: bytes, content: bytes) -> bytes:
        raise RuntimeError("seal failed")

    record = make_record()
    await sqlite_store.add_key_version(b"w", "kek", NOW, primary=True)
    audit = asyncio.ensure_future(sqlite_store.append_audit([_audit_row(1)], broken_seal))
    insert = asyncio.ensure_future(sqlite_store.insert_tokens([record], NOW, {}))
    with pytest.raises(StoreUnavailableError):
        await audit
    assert [o.status for o in await insert] == [InsertStatus.INSERTED]
    assert await sqlite_store.audit_records(0, 10) == []
