"""PostgreSQL only: a legal hold committed while an erasure or a purge is under way is
never missed by it (several replicas delete rows of one database); and what only the
PostgreSQL subject-key store promises (its schema version, start-up errors, replicas
opening it together).

set_subject_hold inserts the hold and locks the subject's rows FOR KEY SHARE in one
transaction. Here that transaction is held open on a connection of the test's own
(the same two statements) while the store's erasure or purge starts: the deleter waits
for the row lock, and once the hold commits it must keep the rows. The wait is observed
in pg_stat_activity, not timed.
"""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest

from vault.errors import FailedPreconditionError, StoreUnavailableError
from vault.storage.base import TokenRecord
from vault.storage.postgres import PostgresStore
from vault.storage.subject_keys_postgres import PostgresSubjectKeyStore

NOW = 1_800_000_000.0  # the suite's fixed clock (as in conftest.py)
REF = b"\x07" * 32
# A bound on how long the deleter may take to reach the lock (not a measurement).
_WAIT_BOUND = 30.0


def _record(token: str) -> TokenRecord:
    return TokenRecord(
        token=token,
        tenant="tenant-a",
        kind=1,
        token_format=1,
        key_version=1,
        ciphertext=b"\x00ct-" + token.encode(),
        fingerprint=b"fp-" + token.encode(),
        deterministic=False,
        subject_ref=REF,
        request_id=None,
        request_hash=None,
        created_at=NOW - 100,
        expires_at=NOW + 1,
    )


async def _until_the_store_waits_for_a_lock(conn: asyncpg.Connection) -> None:
    deadline = time.monotonic() + _WAIT_BOUND
    while not await conn.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND application_name = 'vault' AND wait_event_type = 'Lock'"
    ):
        if time.monotonic() > deadline:
            pytest.fail("the store never waited for the hold's row lock")
        await asyncio.sleep(0.02)


DELETERS = {
    "erase": lambda s: s.erase_subject("tenant-a", REF),
    "ttl-purge": lambda s: s.purge_expired(NOW + 10, 100),
    "retention-purge": lambda s: s.purge_retained("tenant-a", 1, NOW, NOW, 100),
}


@pytest.mark.parametrize("deleter", sorted(DELETERS))
async def test_a_hold_committed_while_a_deleter_waits_keeps_the_rows(pg_database, deleter):
    store = PostgresStore(pg_database)
    await store.open()
    hold = await asyncpg.connect(pg_database)
    try:
        await store.add_key_version(b"wrapped", "kek", NOW, primary=True)
        records = [_record(f"tok_{i}") for i in range(3)]
        await store.insert_tokens(records, NOW, {})
        tx = hold.transaction()
        await tx.start()
        # set_subject_hold's two statements, its transaction left open.
        await hold.execute(
            "INSERT INTO subject_holds (tenant, subject_ref, reason, held_at) "
            "VALUES ('tenant-a', $1, 'case', $2)",
            REF,
            NOW,
        )
        await hold.execute(
            "SELECT id FROM tokens WHERE tenant = 'tenant-a' AND subject_ref = $1 "
            "ORDER BY id FOR KEY SHARE",
            REF,
        )
        running = asyncio.create_task(DELETERS[deleter](store))
        await _until_the_store_waits_for_a_lock(hold)
        await tx.commit()
        outcome = await running
        if deleter == "erase":
            assert (outcome.held, outcome.erased) == (True, 0)
        else:
            assert outcome == 0
        assert all(r is not None for r in await store.get_tokens([r.token for r in records]))
        # Released, the same deleter removes them.
        assert await store.release_subject_hold("tenant-a", REF)
        again = await DELETERS[deleter](store)
        assert (again.erased if deleter == "erase" else again) == 3
    finally:
        await hold.close()
        await store.close()


# -- the PostgreSQL subject-key store --------------------------------------------------


async def test_a_newer_subject_key_schema_is_refused(pg_cluster, pg_subject_key_database):
    keys = PostgresSubjectKeyStore(pg_subject_key_database)
    await keys.open()
    await keys.close()
    name = pg_subject_key_database.rsplit("/", 1)[1]
    pg_cluster.psql(name, "INSERT INTO subject_key_schema (version) VALUES (2)")
    with pytest.raises(FailedPreconditionError) as raised:
        await PostgresSubjectKeyStore(pg_subject_key_database).open()
    assert raised.value.reason == "SCHEMA_TOO_NEW"


async def test_subject_key_store_open_errors_name_no_password(pg_cluster, pg_subject_key_database):
    name = pg_subject_key_database.rsplit("/", 1)[1]
    wrong = pg_cluster.url(name, password="wrong-password")
    keys = PostgresSubjectKeyStore(wrong)
    with pytest.raises(FailedPreconditionError) as raised:
        await keys.open()
    assert raised.value.reason == "STORE_OPEN_FAILED"
    assert "refused the credentials" in str(raised.value)
    assert "wrong-password" not in str(raised.value) + repr(keys)
    with pytest.raises(StoreUnavailableError):
        await keys.subject_key("t", REF)


async def test_replicas_opening_the_subject_key_store_together(pg_subject_key_database):
    stores = [PostgresSubjectKeyStore(pg_subject_key_database) for _ in range(4)]
    await asyncio.gather(*(s.open() for s in stores))
    try:
        await stores[0].put_subject_key("t", REF, b"wrapped", NOW)
        assert [await s.subject_key("t", REF) for s in stores] == [b"wrapped"] * 4
    finally:
        for s in stores:
            await s.close()
