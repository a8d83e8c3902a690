"""Store contract: open, close, reopen, durability and two stores on one database."""

from __future__ import annotations

import asyncio

import pytest

from vault.errors import FailedPreconditionError, StoreUnavailableError
from vault.storage.base import CallerRow, InsertStatus, TokenRecord

NOW = 1_800_000_000.0  # the suite's fixed clock (as in conftest.py)


async def test_everything_survives_close_and_reopen(backend, make_record, make_caller):
    first = backend.new_store()
    await first.open()
    await first.add_key_version(b"w1", "kek", NOW, primary=True)
    records = [make_record(deterministic=True, request_id="req-1"), make_record()]
    await first.insert_tokens(records, NOW, {1: 2})
    await first.put_fingerprint_key("tenant-a", b"fpk", "kek", NOW)
    caller = make_caller("checkout")
    await first.add_caller(caller)
    await first.close()

    second = backend.new_store()
    await second.open()
    try:
        assert await second.get_tokens([r.token for r in records]) == records
        [version] = await second.key_versions()
        assert (version.version, version.state, version.encryptions) == (1, "primary", 2)
        assert await second.fingerprint_key("tenant-a") == b"fpk"
        assert await second.callers() == [caller]
        # The reopened store still enforces what the first one stored.
        again = make_record(deterministic=True, fingerprint=records[0].fingerprint)
        [outcome] = await second.insert_tokens([again], NOW, {})
        assert outcome.status is InsertStatus.DETERMINISTIC_EXISTS
        assert outcome.existing == records[0]
    finally:
        await second.close()


async def test_close_flushes_calls_queued_before_it(backend, make_record):
    store = backend.new_store()
    await store.open()
    await store.add_key_version(b"w1", "kek", NOW, primary=True)
    calls = [[make_record(), make_record()] for _ in range(100)]
    tasks = [asyncio.create_task(store.insert_tokens(c, NOW, {})) for c in calls]
    await asyncio.sleep(0)  # every call has reached the store, none has been answered
    await store.close()
    results = await asyncio.gather(*tasks, return_exceptions=True)

    acknowledged = []
    for call, result in zip(calls, results, strict=True):
        if isinstance(result, StoreUnavailableError):
            continue  # refused, not acknowledged: allowed
        assert not isinstance(result, BaseException), result
        assert [o.status for o in result] == [InsertStatus.INSERTED] * 2
        acknowledged.extend(call)
    # Calls queued before close() must be flushed, not dropped.
    assert len(acknowledged) == 2 * len(calls)

    reopened = backend.new_store()
    await reopened.open()
    try:
        assert await reopened.get_tokens([r.token for r in acknowledged]) == acknowledged
    finally:
        await reopened.close()


async def test_calls_racing_close_are_flushed_or_refused(backend, make_record):
    """Calls started before close() are flushed (or refused); calls after it are refused."""
    store = backend.new_store()
    await store.open()
    await store.add_key_version(b"w1", "kek", NOW, primary=True)
    before = [[make_record()] for _ in range(25)]
    after = [[make_record()] for _ in range(25)]
    tasks = [asyncio.create_task(store.insert_tokens(c, NOW, {})) for c in before]
    closing = asyncio.create_task(store.close())
    tasks += [asyncio.create_task(store.insert_tokens(c, NOW, {})) for c in after]
    results = await asyncio.gather(*tasks, return_exceptions=True)
    await closing

    acknowledged = []
    for call, result in zip(before, results[:25], strict=True):
        if isinstance(result, StoreUnavailableError):
            continue
        assert not isinstance(result, BaseException), result
        assert [o.status for o in result] == [InsertStatus.INSERTED]
        acknowledged.extend(call)
    assert all(isinstance(result, StoreUnavailableError) for result in results[25:])

    reopened = backend.new_store()
    await reopened.open()
    try:
        assert await reopened.get_tokens([r.token for r in acknowledged]) == acknowledged
        assert await reopened.get_tokens([c[0].token for c in after]) == [None] * 25
    finally:
        await reopened.close()


# One row and one caller for the refused calls below (nothing is ever stored).
RECORD = TokenRecord(
    token="tok_after_close",
    tenant="tenant-a",
    kind=1,
    token_format=1,
    key_version=1,
    ciphertext=b"ct",
    fingerprint=b"fp",
    deterministic=False,
    subject_ref=None,
    request_id=None,
    request_hash=None,
    created_at=NOW,
    expires_at=None,
)
CALLER = CallerRow("checkout", "tenant-a", ("tokenize",), "kid_checkout", b"h", NOW, None, None)

CALLS_AFTER_CLOSE = {
    "insert_tokens": lambda s: s.insert_tokens([RECORD], NOW, {}),
    "get_tokens": lambda s: s.get_tokens([RECORD.token]),
    "delete_token": lambda s: s.delete_token(RECORD.tenant, RECORD.token),
    "purge_expired": lambda s: s.purge_expired(NOW, 10),
    "key_versions": lambda s: s.key_versions(),
    "add_key_version": lambda s: s.add_key_version(b"w", "kek", NOW, primary=True),
    "fingerprint_key": lambda s: s.fingerprint_key("tenant-a"),
    "put_fingerprint_key": lambda s: s.put_fingerprint_key("tenant-a", b"k", "kek", NOW),
    "add_caller": lambda s: s.add_caller(CALLER),
    "caller_by_key_id": lambda s: s.caller_by_key_id("kid_checkout"),
    "callers": lambda s: s.callers(),
    "revoke_caller": lambda s: s.revoke_caller("checkout", NOW),
}


@pytest.mark.parametrize("method", sorted(CALLS_AFTER_CLOSE))
async def test_calls_after_close_are_refused(backend, method):
    store = backend.new_store()
    await store.open()
    await store.close()
    call = CALLS_AFTER_CLOSE[method](store)
    with pytest.raises(StoreUnavailableError):
        await asyncio.wait_for(call, timeout=5)


async def test_close_twice_is_harmless(backend):
    store = backend.new_store()
    await store.open()
    await store.close()
    await store.close()
    with pytest.raises(StoreUnavailableError):
        await store.get_tokens(["tok_x"])


@pytest.mark.parametrize("method", ["insert_tokens", "get_tokens", "key_versions"])
async def test_calls_before_open_are_refused_not_left_hanging(backend, method):
    store = backend.new_store()
    call = CALLS_AFTER_CLOSE[method](store)
    try:
        with pytest.raises(StoreUnavailableError):
            await asyncio.wait_for(call, timeout=0.5)
    finally:
        await store.close()


async def test_reopening_keeps_working(backend, make_record):
    for round_ in range(3):
        store = backend.new_store()
        await store.open()
        try:
            if round_ == 0:
                await store.add_key_version(b"w1", "kek", NOW, primary=True)
            record = make_record()
            assert [o.status for o in await store.insert_tokens([record], NOW, {})] == [
                InsertStatus.INSERTED
            ]
            assert len(await store.key_versions()) == 1
        finally:
            await store.close()


async def test_schema_newer_than_the_code_is_refused(backend):
    store = backend.new_store()
    await store.open()
    await store.close()
    await backend.record_schema_version(10_000)

    newer = backend.new_store()
    try:
        with pytest.raises(FailedPreconditionError) as raised:
            await newer.open()
        assert raised.value.reason == "SCHEMA_TOO_NEW"
    finally:
        await newer.close()


async def test_two_stores_on_one_database_open_together_and_share_writes(
    backend, make_record, make_caller
):
    one, two = backend.new_store(), backend.new_store()
    await asyncio.gather(one.open(), two.open())
    try:
        await one.add_key_version(b"w1", "kek", NOW, primary=True)
        assert [r.version for r in await two.key_versions()] == [1]

        from_one, from_two = make_record(), make_record()
        await one.insert_tokens([from_one], NOW, {1: 1})
        await two.insert_tokens([from_two], NOW, {1: 1})
        assert await two.get_tokens([from_one.token]) == [from_one]
        assert await one.get_tokens([from_two.token]) == [from_two]
        [version] = await one.key_versions()
        assert version.encryptions == 2

        # A token taken through one store is taken for the other.
        [clash] = await two.insert_tokens([make_record(token=from_one.token)], NOW, {})
        assert clash.status is InsertStatus.TOKEN_TAKEN

        await one.add_caller(make_caller("checkout"))
        assert [c.name for c in await two.callers()] == ["checkout"]
        assert await two.delete_token(from_one.tenant, from_one.token) is True
        assert await one.get_tokens([from_one.token]) == [None]
    finally:
        await asyncio.gather(one.close(), two.close())


async def test_two_stores_racing_for_one_deterministic_key(backend, make_record):
    one, two = backend.new_store(), backend.new_store()
    await one.open()
    await two.open()
    try:
        await one.add_key_version(b"w1", "kek", NOW, primary=True)
        records = [make_record(deterministic=True, fingerprint=b"F" * 32) for _ in range(20)]
        results = await asyncio.gather(
            *(
                (one if i % 2 else two).insert_tokens([record], NOW, {})
                for i, record in enumerate(records)
            )
        )
        statuses = [outcomes[0].status for outcomes in results]
        assert statuses.count(InsertStatus.INSERTED) == 1
        assert statuses.count(InsertStatus.DETERMINISTIC_EXISTS) == 19
        winner = records[statuses.index(InsertStatus.INSERTED)]
        assert all(outcomes[0].existing in (None, winner) for outcomes in results)

        # Both answer the same fingerprint key when racing to create it.
        keys = await asyncio.gather(
            one.put_fingerprint_key("tenant-a", b"from-one", "kek", NOW),
            two.put_fingerprint_key("tenant-a", b"from-two", "kek", NOW),
        )
        assert keys[0] == keys[1]
        assert keys[0] in (b"from-one", b"from-two")
    finally:
        await one.close()
        await two.close()
