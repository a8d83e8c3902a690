"""What only the PostgreSQL store promises: migration bookkeeping under concurrent
openers, one-transaction migrations, start-up errors without secrets, losing and
regaining the server, and the triggers that guard the schema.

Everything the Store protocol promises is in the contract suite (test_store_*.py),
which runs on PostgreSQL too.
"""

from __future__ import annotations

import asyncio

import pytest
from pgcluster import PASSWORD, PgClientError

from vault.errors import FailedPreconditionError, StoreUnavailableError
from vault.storage import postgres_open as postgres_module  # the migrations run there
from vault.storage.base import AuditRow, InsertStatus, RetireOutcome, TokenRecord
from vault.storage.postgres import PostgresStore, redact_url
from vault.storage.sqlite import migrations

NOW = 1_800_000_000.0  # the suite's fixed clock (as in conftest.py)


def _record(token: str, key_version: int = 1) -> TokenRecord:
    return TokenRecord(
        token=token,
        tenant="tenant-a",
        kind=1,
        token_format=1,
        key_version=key_version,
        ciphertext=b"\x00ct-" + token.encode(),
        fingerprint=b"fp-" + token.encode(),
        deterministic=False,
        subject_ref=None,
        request_id=None,
        request_hash=None,
        created_at=NOW,
        expires_at=None,
    )


def _database(url: str) -> str:
    return url.rsplit("/", 1)[1]


def _applied(cluster, url) -> list[str]:
    out = cluster.psql(
        _database(url), "SELECT version, applied_at FROM schema_migrations ORDER BY version"
    )
    return out.splitlines()


@pytest.fixture
async def pg_store(pg_database):
    store = PostgresStore(pg_database)
    await store.open()
    yield store
    await store.close()


async def test_migrations_have_the_sqlite_numbers():
    assert [n for n, _ in migrations("postgres")] == [n for n, _ in migrations("sqlite")]


async def test_concurrent_openers_apply_each_migration_once(pg_cluster, pg_database):
    stores = [PostgresStore(pg_database) for _ in range(6)]
    await asyncio.gather(*(s.open() for s in stores))
    await asyncio.gather(*(s.close() for s in stores))
    first = _applied(pg_cluster, pg_database)
    # The lock row (0), then every migration once.
    assert [int(line.split("|")[0]) for line in first] == [
        0,
        *(n for n, _ in migrations("postgres")),
    ]
    again = PostgresStore(pg_database)
    await again.open()
    await again.close()
    assert _applied(pg_cluster, pg_database) == first  # same rows, same times: none ran again


async def test_unknown_migration_below_the_latest_is_schema_too_new(pg_cluster, pg_database):
    store = PostgresStore(pg_database)
    await store.open()
    await store.close()
    # A number this code does not ship (another build's migration), not past the latest.
    unknown = next(n for n in range(1, 100) if n not in dict(migrations("postgres")))
    sql = f"INSERT INTO schema_migrations (version) VALUES ({unknown})"  # noqa: S608 - an int
    pg_cluster.psql(_database(pg_database), sql)
    newer = PostgresStore(pg_database)
    with pytest.raises(FailedPreconditionError) as raised:
        await newer.open()
    assert raised.value.reason == "SCHEMA_TOO_NEW"
    await newer.close()


async def test_a_failing_migration_leaves_no_half_migrated_schema(
    pg_cluster, pg_database, monkeypatch
):
    shipped = migrations("postgres")
    broken = [*shipped, (99, "CREATE TABLE half_done (id INTEGER); SELECT no_such_column;")]
    monkeypatch.setattr(postgres_module, "migrations", lambda _dialect: broken)
    store = PostgresStore(pg_database)
    with pytest.raises(FailedPreconditionError) as raised:
        await store.open()
    assert raised.value.reason == "STORE_OPEN_FAILED"
    await store.close()
    tables = pg_cluster.psql(
        _database(pg_database),
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'",
    ).split()
    # Only the bookkeeping table: not one of the shipped migrations' tables either.
    assert tables == ["schema_migrations"]
    monkeypatch.setattr(postgres_module, "migrations", lambda _dialect: shipped)
    fixed = PostgresStore(pg_database)
    await fixed.open()
    await fixed.close()


@pytest.mark.parametrize(
    ("make_url", "says"),
    [
        (lambda c, db: c.url(db, password="not-the-password"), "refused the credentials"),
        (lambda c, _db: c.url("no_such_database"), "no such database"),
        (
            lambda c, db: c.url(db).replace(f":{c.port}/", f":{_closed_port()}/"),
            "cannot reach the database",
        ),
        (lambda _c, _db: "postgresql://vault:pw@[bad/x", "not valid"),
    ],
    ids=["wrong-password", "no-database", "unreachable", "bad-url"],
)
async def test_open_errors_are_one_value_free_line(pg_cluster, pg_database, make_url, says):
    url = make_url(pg_cluster, _database(pg_database))
    store = PostgresStore(url)
    with pytest.raises(FailedPreconditionError) as raised:
        await store.open()
    await store.close()
    message = str(raised.value)
    assert raised.value.reason == "STORE_OPEN_FAILED"
    assert says in message
    assert "\n" not in message
    for secret in (PASSWORD, "not-the-password", ":pw@"):
        assert secret not in message
    assert PASSWORD not in repr(store)


def _closed_port() -> int:
    import socket  # noqa: PLC0415 - only this case needs a port nobody listens on

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_redact_url_drops_the_password_and_query():
    assert (
        redact_url("postgresql://vault:s3cret@db.example:5432/vault?password=s3cret")
        == "postgresql://vault@db.example:5432/vault"
    )
    assert "s3cret" not in redact_url("postgres://:s3cret@[::1]/x")


async def test_calls_fail_fast_while_the_server_is_down_and_recover(pg_cluster, pg_store):
    await pg_store.add_key_version(b"w1", "kek", NOW, primary=True)
    before = _record("tok_before")
    assert [o.status for o in await pg_store.insert_tokens([before], NOW, {})] == [
        InsertStatus.INSERTED
    ]
    pg_cluster.stop_server()
    try:
        with pytest.raises(StoreUnavailableError):
            await asyncio.wait_for(pg_store.get_tokens([before.token]), 30)
        with pytest.raises(StoreUnavailableError):
            await asyncio.wait_for(pg_store.insert_tokens([_record("tok_down")], NOW, {}), 30)
        with pytest.raises(StoreUnavailableError):
            await asyncio.wait_for(pg_store.key_versions(), 30)
    finally:
        pg_cluster.start_server()
    # Back by itself: pooled connections cut by the restart are replaced. A call on a
    # connection that died with the old server may still fail once; none hangs.
    after = _record("tok_after")
    for _ in range(20):
        try:
            outcomes = await pg_store.insert_tokens([after], NOW, {})
            break
        except StoreUnavailableError:
            continue
    else:
        pytest.fail("the store did not recover")
    assert [o.status for o in outcomes] == [InsertStatus.INSERTED]
    for _ in range(20):
        try:
            got = await pg_store.get_tokens([before.token, after.token, "tok_down"])
            break
        except StoreUnavailableError:
            continue
    assert got == [before, after, None]


async def test_audit_log_refuses_update_and_delete(pg_cluster, pg_store):
    row = AuditRow(0, NOW, "ops", "", "caller.add", (), "", "ok", "", "r1", "", (), b"")
    await pg_store.append_audit([row], lambda _prev, _content: b"m" * 32)
    for sql in ("UPDATE audit_log SET caller = 'x'", "DELETE FROM audit_log"):
        with pytest.raises(PgClientError, match="append-only"):
            pg_cluster.psql(_database(pg_store._url), sql)
    assert [r.caller for r in await pg_store.audit_records(0, 10)] == ["ops"]


async def test_no_record_is_ever_stored_under_a_retired_key(pg_cluster, pg_store):
    await pg_store.add_key_version(b"w1", "kek", NOW, primary=True)
    await pg_store.add_next_key_version(2, b"w2", "kek", NOW)
    assert await pg_store.retire_key_version(1) is RetireOutcome.RETIRED
    with pytest.raises(StoreUnavailableError):
        await pg_store.insert_tokens([_record("tok_retired", key_version=1)], NOW, {})
    assert await pg_store.get_tokens(["tok_retired"]) == [None]
    # Nor behind the store's back.
    with pytest.raises(PgClientError, match="retired"):
        pg_cluster.psql(
            _database(pg_store._url),
            "INSERT INTO tokens (token, tenant, kind, token_format, key_version, ciphertext, "
            "fingerprint, deterministic, created_at) "
            "VALUES ('t', 'x', 1, 1, 1, '\\x00', '\\x00', false, 0)",
        )


async def test_retire_racing_inserts_under_that_version(pg_database):
    """Retire and many inserts under the same version, from two stores: either the
    retire sees the records (IN_USE) or every insert is refused; never both."""
    one, two = PostgresStore(pg_database), PostgresStore(pg_database)
    await asyncio.gather(one.open(), two.open())
    try:
        await one.add_key_version(b"w1", "kek", NOW, primary=True)
        await one.add_next_key_version(2, b"w2", "kek", NOW)
        inserts = [
            one.insert_tokens([_record(f"tok_r{i}", key_version=1)], NOW, {}) for i in range(20)
        ]
        results = await asyncio.gather(two.retire_key_version(1), *inserts, return_exceptions=True)
        outcome, stored = results[0], await one.records_by_key_version()
        if outcome is RetireOutcome.RETIRED:
            assert stored.get(1, 0) == 0
        else:
            assert outcome is RetireOutcome.IN_USE
            assert stored.get(1, 0) > 0
    finally:
        await asyncio.gather(one.close(), two.close())
