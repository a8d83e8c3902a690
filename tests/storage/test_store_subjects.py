"""Contract: the data-subject and retention primitives of the Store, and the
SubjectKeyStore, on every backend."""

from __future__ import annotations

import asyncio

import pytest

from vault.audit.base import ACTION_REVEAL
from vault.domain.retention import retention_stats
from vault.storage.base import AuditRow, TokenUpdate, UpdateStatus
from vault.storage.subject_keys_sqlite import SqliteSubjectKeyStore

NOW = 1_800_000_000.0  # the suite's fixed clock (as in conftest.py)
REF_A = b"\x01" * 32
REF_B = b"\x02" * 32


async def _subject_rows(store, make_record):
    a = [make_record(subject_ref=REF_A) for _ in range(3)]
    b = [make_record(subject_ref=REF_B)]
    other_tenant = [make_record(subject_ref=REF_A, tenant="tenant-b")]
    nobody = [make_record()]
    await store.insert_tokens(a + b + other_tenant + nobody, NOW, {})
    return a, b, other_tenant, nobody


async def test_subject_tokens_are_the_subjects_rows_of_the_tenant(store, make_record):
    a, _, other, _ = await _subject_rows(store, make_record)
    assert [r.token for r in await store.subject_tokens("tenant-a", REF_A)] == [r.token for r in a]
    assert [r.token for r in await store.subject_tokens("tenant-b", REF_A)] == [other[0].token]
    assert await store.subject_tokens("tenant-a", b"\x03" * 32) == []


async def test_erase_removes_only_the_subjects_rows(store, make_record):
    a, b, other, nobody = await _subject_rows(store, make_record)
    outcome = await store.erase_subject("tenant-a", REF_A)
    assert (outcome.held, outcome.erased) == (False, 3)
    assert await store.get_tokens([r.token for r in a]) == [None] * 3
    left = await store.get_tokens([b[0].token, other[0].token, nobody[0].token])
    assert all(r is not None for r in left)
    assert (await store.erase_subject("tenant-a", REF_A)).erased == 0


async def test_a_held_subject_is_not_erased(store, make_record):
    a, *_ = await _subject_rows(store, make_record)
    assert await store.set_subject_hold("tenant-a", REF_A, "case 1", NOW)
    assert not await store.set_subject_hold("tenant-a", REF_A, "case 2", NOW)  # kept
    assert await store.subject_held("tenant-a", REF_A)
    assert not await store.subject_held("tenant-b", REF_A)  # holds are per tenant
    outcome = await store.erase_subject("tenant-a", REF_A)
    assert (outcome.held, outcome.erased) == (True, 0)
    assert all(r is not None for r in await store.get_tokens([r.token for r in a]))
    assert await store.release_subject_hold("tenant-a", REF_A)
    assert not await store.release_subject_hold("tenant-a", REF_A)
    assert (await store.erase_subject("tenant-a", REF_A)).erased == 3


async def test_expiry_purge_skips_held_subjects(store, make_record):
    held = make_record(subject_ref=REF_A, expires_at=NOW + 1)
    free = make_record(subject_ref=REF_B, expires_at=NOW + 1)
    await store.insert_tokens([held, free], NOW, {})
    await store.set_subject_hold("tenant-a", REF_A, "case", NOW)
    assert await store.purge_expired(NOW + 10, 100) == 1
    assert (await store.get_tokens([held.token]))[0] is not None
    await store.release_subject_hold("tenant-a", REF_A)
    assert await store.purge_expired(NOW + 10, 100) == 1


async def test_a_held_expired_row_still_counts_for_deterministic_and_request_ids(
    store, make_record
):
    held = make_record(
        subject_ref=REF_A,
        expires_at=NOW + 1,
        deterministic=True,
        request_id="r1",
        request_hash=b"h1",
    )
    await store.insert_tokens([held], NOW, {})
    await store.set_subject_hold("tenant-a", REF_A, "case", NOW)
    again = make_record(
        fingerprint=held.fingerprint,
        deterministic=True,
        subject_ref=REF_A,
        request_id="r2",
        request_hash=b"h2",
    )
    (outcome,) = await store.insert_tokens([again], NOW + 10, {})
    assert outcome.existing is not None
    assert outcome.existing.token == held.token  # not replaced: the hold keeps it
    (retry,) = await store.insert_tokens(
        [make_record(request_id="r1", request_hash=b"h1")], NOW + 10, {}
    )
    assert retry.existing is not None
    assert retry.existing.token == held.token


async def test_update_token_is_a_compare_and_set(store, make_record):
    rec = make_record()
    await store.insert_tokens([rec], NOW, {})

    def update(**fields):
        values = {
            "token": rec.token,
            "tenant": rec.tenant,
            "old_version": 1,
            "old_ciphertext": rec.ciphertext,
            "new_version": 1,
            "new_ciphertext": b"new",
            "new_fingerprint": b"f" * 32,
            "now": NOW,
        }
        return TokenUpdate(**(values | fields))

    assert await store.update_token(update(old_ciphertext=b"stale")) is UpdateStatus.CHANGED
    assert await store.update_token(update(tenant="tenant-b")) is UpdateStatus.CHANGED
    assert await store.update_token(update()) is UpdateStatus.UPDATED
    (got,) = await store.get_tokens([rec.token])
    assert got is not None
    assert (got.ciphertext, got.fingerprint, got.token) == (b"new", b"f" * 32, rec.token)
    assert await store.update_token(update()) is UpdateStatus.CHANGED  # applied once
    assert {r.version: r.encryptions for r in await store.key_versions()}[1] == 1


async def test_update_token_refuses_a_live_deterministic_twin(store, make_record):
    one = make_record(deterministic=True)
    two = make_record(deterministic=True)
    gone = make_record(deterministic=True, expires_at=NOW + 1)
    await store.insert_tokens([one, two, gone], NOW, {})

    def move(rec, fingerprint, now=NOW):
        return TokenUpdate(rec.token, rec.tenant, 1, rec.ciphertext, 1, b"new", fingerprint, now)

    assert await store.update_token(move(two, one.fingerprint)) is UpdateStatus.DETERMINISTIC_EXISTS
    (still,) = await store.get_tokens([two.token])
    assert still is not None
    assert still.ciphertext == two.ciphertext
    # An expired twin frees its deterministic key.
    assert await store.update_token(move(two, gone.fingerprint, NOW + 5)) is UpdateStatus.UPDATED
    assert await store.get_tokens([gone.token]) == [None]


def _audit(tokens, tenant="tenant-a", action=ACTION_REVEAL):
    return AuditRow(0, NOW, "c", tenant, action, tuple(tokens), "p", "ok", "", "r", "", (), b"")


async def test_audit_records_for_tokens(store):
    def seal(prev, content):
        return b"m" * 32

    await store.append_audit(
        [
            _audit(["tok_a"]),
            _audit(["tok_b"]),
            _audit(["tok_a"], tenant="tenant-b"),
            _audit(["tok_a"], action="token.delete"),
            _audit(["tok_x", "tok_a"]),
        ],
        seal,
    )
    found = await store.audit_records_for_tokens("tenant-a", ACTION_REVEAL, ["tok_a", "tok_c"])
    assert [(r.seq, r.tokens) for r in found] == [(1, ("tok_a",)), (5, ("tok_x", "tok_a"))]
    many = [f"tok_{i}" for i in range(2000)] + ["tok_b"]
    assert [
        r.seq for r in await store.audit_records_for_tokens("tenant-a", ACTION_REVEAL, many)
    ] == [2]


async def test_retention_policies_purge_and_stats(store, make_record):
    old = [make_record(created_at=NOW - 100) for _ in range(3)]
    held = make_record(created_at=NOW - 100, subject_ref=REF_A)
    young = make_record(created_at=NOW - 1)
    other_kind = make_record(created_at=NOW - 100, kind=8)
    await store.insert_tokens([*old, held, young, other_kind], NOW, {})
    await store.set_subject_hold("tenant-a", REF_A, "case", NOW)
    await store.set_retention_policy("tenant-a", 1, 50.0, NOW)
    await store.set_retention_policy("tenant-a", 1, 60.0, NOW)  # replaced
    assert [(p.tenant, p.kind, p.max_age) for p in await store.retention_policies()] == [
        ("tenant-a", 1, 60.0)
    ]
    (stats,) = await retention_stats(store, NOW)
    assert (stats.due, stats.held, stats.purged, stats.last_purge_at) == (3, 1, 0, None)
    assert await store.purge_retained("tenant-a", 1, NOW - 60, NOW + 1, 2) == 3  # 2 + 1
    assert await store.purge_retained("tenant-a", 1, NOW - 60, NOW + 2, 2) == 0
    (stats,) = await retention_stats(store, NOW)
    assert (stats.due, stats.held, stats.purged, stats.last_purge_at) == (0, 1, 3, NOW + 1)
    left = await store.get_tokens([held.token, young.token, other_kind.token])
    assert all(r is not None for r in left)
    assert await store.clear_retention_policy("tenant-a", 1)
    assert not await store.clear_retention_policy("tenant-a", 1)
    # The counter outlives the policy (the report still shows what was purged).
    (stats,) = await retention_stats(store, NOW)
    assert (stats.kind, stats.purged) == (1, 3)


# -- SubjectKeyStore -----------------------------------------------------------------------


@pytest.fixture
async def subject_key_store(new_subject_key_store):
    ks = new_subject_key_store()
    await ks.open()
    yield ks
    await ks.close()


async def test_subject_keys_first_writer_wins_and_destroy(subject_key_store):
    ks = subject_key_store
    assert await ks.subject_key("t", REF_A) is None
    assert await ks.put_subject_key("t", REF_A, b"wrapped-1", NOW) == b"wrapped-1"
    assert await ks.put_subject_key("t", REF_A, b"wrapped-2", NOW) == b"wrapped-1"
    assert await ks.subject_key("t", REF_A) == b"wrapped-1"
    assert await ks.subject_key("u", REF_A) is None  # per tenant
    assert await ks.destroy_subject_key("t", REF_A)
    assert not await ks.destroy_subject_key("t", REF_A)
    assert await ks.subject_key("t", REF_A) is None


async def test_two_processes_racing_agree_on_one_key(new_subject_key_store):
    stores = [new_subject_key_store() for _ in range(4)]
    for ks in stores:
        await ks.open()
    try:
        got = await asyncio.gather(
            *(ks.put_subject_key("t", REF_B, b"w%d" % i, NOW) for i, ks in enumerate(stores))
        )
        assert len(set(got)) == 1
    finally:
        for ks in stores:
            await ks.close()


async def test_a_destroyed_key_leaves_no_bytes_in_the_sqlite_file(tmp_path):
    # SQLite only: PostgreSQL has no secure_delete, a dead row stays in its page until
    # VACUUM reuses it (README, Data subjects: what the key database's backups need).
    store = SqliteSubjectKeyStore(tmp_path / "subject-keys.db")
    await store.open()
    try:
        wrapped = b"WRAPPED-SUBJECT-KEY-" + b"\xab" * 40
        await store.put_subject_key("t", REF_A, wrapped, NOW)
        await store.destroy_subject_key("t", REF_A)
    finally:
        await store.close()
    files = list(tmp_path.glob("subject-keys.db*"))
    assert files
    for path in files:
        assert wrapped not in path.read_bytes(), path.name


async def test_retention_purges_exactly_the_rows_older_than_the_cutoff(store, make_record):
    # Rows in time order, as tokenize writes them; the cutoff falls between two of them.
    rows = [make_record(created_at=NOW - 1000 + i) for i in range(300)]
    for chunk in (rows[:100], rows[100:200], rows[200:]):
        await store.insert_tokens(chunk, NOW, {})
    cutoff = NOW - 1000 + 137.5
    assert await store.purge_retained("tenant-a", 1, cutoff, NOW, 50) == 138
    left = await store.get_tokens([r.token for r in rows])
    assert [r is not None for r in left] == [False] * 138 + [True] * 162
