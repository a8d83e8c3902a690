"""Contract: the rotation primitives (record counts, rewrap compare-and-set, the rewrap
lease, retirement), on every store."""

from __future__ import annotations

import asyncio

from vault.storage.base import RetireOutcome, RewrapProgressRow, RewrapUpdate

NOW = 1_800_000_000.0  # the suite's fixed clock (as in conftest.py)


async def test_add_next_key_version_takes_only_the_next_number(store):
    assert not await store.add_next_key_version(3, b"w3", "kek", NOW)
    assert await store.add_next_key_version(2, b"w2", "kek", NOW)
    assert not await store.add_next_key_version(2, b"w2b", "kek", NOW)
    states = {r.version: (r.state, r.wrapped_key) for r in await store.key_versions()}
    assert states == {1: ("active", b"wrapped-dek-1"), 2: ("primary", b"w2")}


async def test_records_by_key_version_and_rewrap_scan(store, make_record):
    await store.add_next_key_version(2, b"w2", "kek", NOW)
    recs = [make_record(key_version=1) for _ in range(5)] + [make_record(key_version=2)]
    await store.insert_tokens(recs, NOW, {})
    assert await store.records_by_key_version() == {1: 5, 2: 1}
    first = await store.tokens_to_rewrap(2, 0, 3)
    assert [r.record.token for r in first] == [r.token for r in recs[:3]]
    rest = await store.tokens_to_rewrap(2, first[-1].position, 3)
    assert [r.record.token for r in rest] == [r.token for r in recs[3:5]]


async def test_rewrap_is_a_compare_and_set(store, make_record):
    await store.add_next_key_version(2, b"w2", "kek", NOW)
    a, b, c = (make_record(key_version=1) for _ in range(3))
    await store.insert_tokens([a, b, c], NOW, {})
    # b is deleted concurrently; c's ciphertext no longer matches: neither is written.
    assert await store.delete_token(b.tenant, b.token)
    updates = [
        RewrapUpdate(a.token, 1, a.ciphertext, 2, b"new-a"),
        RewrapUpdate(b.token, 1, b.ciphertext, 2, b"new-b"),
        RewrapUpdate(c.token, 1, b"stale", 2, b"new-c"),
    ]
    assert await store.rewrap_tokens(updates, len(updates)) == 1
    got = await store.get_tokens([a.token, b.token, c.token])
    assert got[0] is not None
    assert (got[0].key_version, got[0].ciphertext) == (2, b"new-a")
    assert got[1] is None  # not resurrected
    assert got[2] is not None
    assert (got[2].key_version, got[2].ciphertext) == (1, c.ciphertext)
    # Applied twice, nothing changes (no double encryption of a rewrapped row).
    assert await store.rewrap_tokens(updates[:1], 1) == 0
    enc = {r.version: r.encryptions for r in await store.key_versions()}
    assert enc[2] == 4


async def test_rewrap_lease(store):
    assert await store.take_rewrap_lease("a", NOW, NOW + 5)
    assert await store.take_rewrap_lease("a", NOW + 1, NOW + 6)  # renewal
    assert not await store.take_rewrap_lease("b", NOW + 2, NOW + 7)  # live
    assert await store.take_rewrap_lease("b", NOW + 6, NOW + 11)  # a's expired
    assert not await store.take_rewrap_lease("a", NOW + 7, NOW + 12)
    await store.release_rewrap_lease("a")  # not a's: no effect
    assert not await store.take_rewrap_lease("c", NOW + 7, NOW + 12)
    await store.release_rewrap_lease("b")
    assert await store.take_rewrap_lease("c", NOW + 7, NOW + 12)


async def test_retire_refusals_change_nothing(store, make_record):
    await store.add_next_key_version(2, b"w2", "kek", NOW)
    rec = make_record(key_version=1)
    await store.insert_tokens([rec], NOW, {})
    before = await store.key_versions()
    assert await store.retire_key_version(2) is RetireOutcome.PRIMARY
    assert await store.retire_key_version(1) is RetireOutcome.IN_USE
    assert await store.retire_key_version(7) is RetireOutcome.UNKNOWN
    assert await store.key_versions() == before
    assert await store.delete_token(rec.tenant, rec.token)
    assert await store.retire_key_version(1) is RetireOutcome.RETIRED
    assert await store.retire_key_version(1) is RetireOutcome.ALREADY_RETIRED
    rows = {r.version: r for r in await store.key_versions()}
    assert (rows[1].state, rows[1].wrapped_key) == ("retired", None)


def _progress(holder: str, **changes) -> RewrapProgressRow:
    fields = {
        "holder": holder,
        "primary_version": 2,
        "batch_size": 500,
        "rate": 0.0,
        "started_at": NOW,
        "last_batch_at": NOW,
        "finished_at": None,
        "batches": 0,
        "rewrapped": 0,
        "skipped": 0,
        "failed": 0,
        "remaining": 10,
    }
    return RewrapProgressRow(**(fields | changes))


async def test_rewrap_progress_is_kept_and_names_its_lease(store, backend):
    assert await store.rewrap_progress() is None
    assert await store.take_rewrap_lease("a", NOW, NOW + 5)
    await store.put_rewrap_progress(_progress("a"))
    later = _progress("a", last_batch_at=NOW + 1, batches=1, rewrapped=4, skipped=1, remaining=5)
    await store.put_rewrap_progress(later)
    # Another process on the same store sees it, with the lease its run holds.
    other = backend.new_store()
    await other.open()
    try:
        assert await other.rewrap_progress() == RewrapProgressRow(
            **{**_fields(later), "lease_expires_at": NOW + 5}
        )
    finally:
        await other.close()
    # Released (or taken by another run): the row stays, without a lease.
    await store.release_rewrap_lease("a")
    got = await store.rewrap_progress()
    assert got is not None
    assert (got.rewrapped, got.lease_expires_at) == (4, None)
    assert await store.take_rewrap_lease("b", NOW + 2, NOW + 7)
    got = await store.rewrap_progress()
    assert got is not None
    assert (got.holder, got.lease_expires_at) == ("a", None)
    # A new run replaces it; finished_at marks completion.
    await store.put_rewrap_progress(_progress("b", finished_at=NOW + 3, remaining=0))
    got = await store.rewrap_progress()
    assert got is not None
    assert (got.holder, got.finished_at, got.remaining, got.lease_expires_at) == (
        "b",
        NOW + 3,
        0,
        NOW + 7,
    )


def _fields(row: RewrapProgressRow) -> dict:
    return {f: getattr(row, f) for f in RewrapProgressRow.__dataclass_fields__}


async def test_job_leases_are_per_job(store):
    assert await store.take_job_lease("ttl-purge", "a", NOW, NOW + 5)
    assert await store.take_job_lease("ttl-purge", "a", NOW + 1, NOW + 6)  # renewal
    assert not await store.take_job_lease("ttl-purge", "b", NOW + 2, NOW + 7)  # live
    assert await store.take_job_lease("other-job", "b", NOW + 2, NOW + 7)  # another job
    assert await store.take_job_lease("ttl-purge", "b", NOW + 6, NOW + 11)  # a's expired
    assert not await store.take_job_lease("ttl-purge", "a", NOW + 7, NOW + 12)
    await store.release_job_lease("ttl-purge", "a")  # not a's: no effect
    assert not await store.take_job_lease("ttl-purge", "c", NOW + 7, NOW + 12)
    await store.release_job_lease("ttl-purge", "b")
    assert await store.take_job_lease("ttl-purge", "c", NOW + 7, NOW + 12)
    # The rewrap lease is a lease of its own.
    assert await store.take_rewrap_lease("z", NOW + 7, NOW + 12)


async def test_two_stores_racing_for_one_job_lease(backend):
    stores = [backend.new_store() for _ in range(2)]
    await asyncio.gather(*(s.open() for s in stores))
    try:
        taken = await asyncio.gather(
            *(
                stores[i % 2].take_job_lease("ttl-purge", f"holder-{i}", NOW, NOW + 30)
                for i in range(10)
            )
        )
        assert taken.count(True) == 1
    finally:
        await asyncio.gather(*(s.close() for s in stores))


async def test_progress_written_by_two_processes_stays_one_row(store, backend):
    other = backend.new_store()
    await other.open()
    try:
        rows = [_progress(f"run-{i}", batches=i) for i in range(8)]
        await asyncio.gather(
            *((store, other)[i % 2].put_rewrap_progress(r) for i, r in enumerate(rows))
        )
        got = await other.rewrap_progress()
        assert got in rows  # whichever write came last, whole (not a mix of two)
        assert got is not None
        assert got.batches == int(got.holder.removeprefix("run-"))
    finally:
        await other.close()
