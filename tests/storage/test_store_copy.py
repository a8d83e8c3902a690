"""storage/copy.py: an SQLite store copied into PostgreSQL reads back identically through
the Store protocol; a re-run copies nothing; a target holding other data is refused and
left as it was; leases stay behind. (The vaultctl command around it is tested in
tests/e2e.)"""

from __future__ import annotations

import dataclasses
import hashlib

import pytest

from vault.audit.chain import genesis_head
from vault.domain.retention import retention_stats
from vault.storage.base import AuditRow, InsertStatus, RewrapProgressRow, ShareSchemeRow
from vault.storage.copy import CopyError, copy_sqlite_to_postgres, copy_subject_keys
from vault.storage.postgres import PostgresStore
from vault.storage.sqlite import SqliteStore
from vault.storage.subject_keys_postgres import PostgresSubjectKeyStore
from vault.storage.subject_keys_sqlite import SqliteSubjectKeyStore

NOW = 1_800_000_000.0  # the suite's fixed clock (as in conftest.py)
LEASE_EXPIRY = NOW + 3600  # the source's leases are live throughout the test

SCHEME = ShareSchemeRow(
    "file:0011223344556677", 2, 3, tuple(hashlib.sha256(b"%d" % i).digest() for i in (1, 2, 3)), NOW
)
# A rewrap the source was running (its lease live) when it was copied.
PROGRESS = RewrapProgressRow("run-on-source", 2, 500, 100.0, NOW, NOW + 2, None, 3, 1200, 4, 1, 300)


def _seal(prev: bytes, content: bytes) -> bytes:
    return hashlib.sha256(prev + content).digest()


async def _fill(store, make_record, make_caller) -> list:
    await store.add_key_version(b"wrapped-1", "kek", NOW, primary=True)
    await store.add_next_key_version(2, b"wrapped-2", "kek", NOW + 1)
    records = [
        make_record(key_version=1),
        make_record(key_version=2, deterministic=True, request_id="req-1", request_hash=b"h1"),
        make_record(key_version=2, subject_ref=b"subject", expires_at=NOW + 60),
    ]
    outcomes = await store.insert_tokens(records, NOW, {1: 1, 2: 2})
    assert [o.status for o in outcomes] == [InsertStatus.INSERTED] * 3
    # A request id answered by a deterministic hit: a reservation row of its own.
    hit = make_record(
        key_version=2,
        deterministic=True,
        fingerprint=records[1].fingerprint,
        request_id="req-2",
        request_hash=b"h2",
    )
    [outcome] = await store.insert_tokens([hit], NOW, {2: 1})
    assert outcome.status is InsertStatus.DETERMINISTIC_EXISTS
    await store.put_fingerprint_key("tenant-a", b"fpk", "kek", NOW)
    await store.put_service_key("audit:1", b"audit-key", "kek", NOW, genesis_head(_seal))
    await store.add_caller(make_caller("checkout", cert_identity="spiffe://x/checkout"))
    row = AuditRow(0, NOW, "ops", "t", "caller.add", ("tok_1",), "", "ok", "", "r", "", (), b"")
    await store.append_audit([row, row], _seal)
    assert await store.put_share_scheme(SCHEME)
    assert await store.take_rewrap_lease(PROGRESS.holder, NOW, LEASE_EXPIRY)
    await store.put_rewrap_progress(PROGRESS)
    assert await store.take_job_lease("ttl-purge", "source-process", NOW, LEASE_EXPIRY)
    # The data-subject tables: a hold, a policy, a purge counter.
    assert await store.set_subject_hold("tenant-a", b"subject", "case 7", NOW)
    await store.set_retention_policy("tenant-a", 8, 3600.0, NOW)
    purged = make_record(key_version=2, kind=8)
    await store.insert_tokens([purged], NOW, {2: 1})
    assert await store.purge_retained("tenant-a", 8, NOW + 1, NOW, 10) == 1
    return records


async def _snapshot(store, tokens) -> tuple:
    return (
        await store.get_tokens(tokens),
        await store.key_versions(),
        await store.callers(),
        await store.fingerprint_key("tenant-a"),
        await store.service_key("audit:1"),
        await store.audit_records(0, 100),
        await store.audit_head(),
        await store.records_by_key_version(),
        await store.share_scheme(),
        await store.subject_held("tenant-a", b"subject"),
        await store.retention_policies(),
        await retention_stats(store, NOW),
    )


@pytest.fixture
async def filled_source(tmp_path, make_record, make_caller):
    path = tmp_path / "vault.db"
    store = SqliteStore(path)
    await store.open()
    try:
        records = await _fill(store, make_record, make_caller)
        snapshot = await _snapshot(store, [r.token for r in records])
        # The source's run holds its lease (what is left behind).
        progress = await store.rewrap_progress()
        assert progress == dataclasses.replace(PROGRESS, lease_expires_at=LEASE_EXPIRY)
    finally:
        await store.close()
    return path, records, snapshot


async def _open(url):
    store = PostgresStore(url)
    await store.open()
    return store


async def test_copy_reads_back_identically_and_reruns_as_a_no_op(
    filled_source, pg_database, make_record
):
    path, records, snapshot = filled_source
    target = await _open(pg_database)  # migrated, empty
    await target.close()

    report = {t.table: t for t in await copy_sqlite_to_postgres(path, pg_database)}
    assert report["tokens"].rows == report["tokens"].copied == 3
    for table in ("subject_holds", "retention_policies", "retention_purges"):
        assert (report[table].rows, report[table].copied) == (1, 1), table
    assert report["request_ids"].rows == 1
    assert report["audit_log"].copied == 2
    assert report["kek_shares"].rows == report["kek_shares"].copied == 1
    assert report["rewrap_progress"].rows == report["rewrap_progress"].copied == 1
    assert not {"rewrap_lease", "job_leases", "schema_migrations"} & set(report)

    target = await _open(pg_database)
    try:
        assert await _snapshot(target, [r.token for r in records]) == snapshot
        # The progress came along, its lease did not: the run shows as interrupted there,
        # and the target's processes take the leases at once.
        assert await target.rewrap_progress() == PROGRESS
        assert await target.take_rewrap_lease("run-on-target", NOW + 1, NOW + 5)
        assert await target.take_job_lease("ttl-purge", "target-process", NOW + 1, NOW + 5)
        await target.release_rewrap_lease("run-on-target")
        await target.release_job_lease("ttl-purge", "target-process")
        # The copy keeps enforcing what the source stored, and numbers new rows after it.
        [again] = await target.insert_tokens(
            [make_record(key_version=2, request_id="req-2", request_hash=b"h2")], NOW, {}
        )
        assert again.status is InsertStatus.REQUEST_EXISTS
        fresh = make_record(key_version=2)
        assert [o.status for o in await target.insert_tokens([fresh], NOW, {})] == [
            InsertStatus.INSERTED
        ]
        rewrap = await target.tokens_to_rewrap(2, 0, 10)
        assert [r.record.token for r in rewrap] == [records[0].token]
        await target.delete_token(fresh.tenant, fresh.token)
    finally:
        await target.close()

    rerun = await copy_sqlite_to_postgres(path, pg_database)
    assert all(t.copied == 0 for t in rerun)


@pytest.mark.parametrize(
    ("table", "change"),
    [
        ("callers", "UPDATE callers SET scopes = 'tokenize,detokenize'"),
        ("kek_shares", "UPDATE kek_shares SET threshold = 3"),
        # The target ran a rewrap batch of its own after the copy.
        ("rewrap_progress", "UPDATE rewrap_progress SET batches = batches + 1"),
    ],
)
async def test_a_target_holding_other_contents_is_refused_and_untouched(
    filled_source, pg_cluster, pg_database, table, change
):
    path, _, _ = filled_source
    await (await _open(pg_database)).close()
    await copy_sqlite_to_postgres(path, pg_database)
    database = pg_database.rsplit("/", 1)[1]
    # Same rows, one of them changed: counts match, contents do not.
    pg_cluster.psql(database, change)
    read_back = f"SELECT * FROM {table}"  # noqa: S608 - a constant of the test
    before = pg_cluster.psql(database, read_back)
    with pytest.raises(CopyError, match=f"other data in {table}"):
        await copy_sqlite_to_postgres(path, pg_database)
    assert pg_cluster.psql(database, read_back) == before


async def test_a_target_of_another_schema_is_refused(filled_source, pg_cluster, pg_database):
    path, _, _ = filled_source
    await (await _open(pg_database)).close()
    pg_cluster.psql(pg_database.rsplit("/", 1)[1], "CREATE TABLE stray (id INTEGER)")
    with pytest.raises(CopyError, match="different tables"):
        await copy_sqlite_to_postgres(path, pg_database)


async def test_subject_keys_copy_as_stored_rerun_and_refuse_other_bytes(
    tmp_path, pg_subject_key_database
):
    source = SqliteSubjectKeyStore(tmp_path / "subject-keys.db")
    await source.open()
    keys = {("t", bytes([i]) * 32): b"wrapped-%d\x00\xff" % i for i in range(5)}
    for (tenant, ref), wrapped in keys.items():
        await source.put_subject_key(tenant, ref, wrapped, NOW)
    await source.close()
    target = PostgresSubjectKeyStore(pg_subject_key_database)
    await target.open()
    try:
        first = await copy_subject_keys(tmp_path / "subject-keys.db", target)
        assert (first.table, first.rows, first.copied) == ("subject_keys", 5, 5)
        for (tenant, ref), wrapped in keys.items():
            assert await target.subject_key(tenant, ref) == wrapped
        again = await copy_subject_keys(tmp_path / "subject-keys.db", target)
        assert (again.rows, again.copied) == (5, 0)
        # A key the target holds with other bytes: refused (first writer wins there).
        await target.destroy_subject_key("t", bytes([3]) * 32)
        await target.put_subject_key("t", bytes([3]) * 32, b"another key", NOW)
        with pytest.raises(CopyError, match="other data in subject_keys"):
            await copy_subject_keys(tmp_path / "subject-keys.db", target)
        assert await target.subject_key("t", bytes([3]) * 32) == b"another key"
    finally:
        await target.close()
