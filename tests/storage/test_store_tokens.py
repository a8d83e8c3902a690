"""Store contract: token rows (insert outcomes, reads, expiry, delete, purge)."""

from __future__ import annotations

import asyncio

import pytest

from vault.storage.base import InsertStatus

NOW = 1_800_000_000.0  # the suite's fixed clock (as in conftest.py)

INSERTED = InsertStatus.INSERTED
DET_EXISTS = InsertStatus.DETERMINISTIC_EXISTS
REQ_EXISTS = InsertStatus.REQUEST_EXISTS
TAKEN = InsertStatus.TOKEN_TAKEN
ABORTED = InsertStatus.ABORTED


def statuses(outcomes):
    return [o.status for o in outcomes]


async def stored(store, records):
    """The stored row for each record's token (None where absent)."""
    return await store.get_tokens([r.token for r in records])


# -- round trip and reads ----------------------------------------------------------


async def test_round_trip_preserves_every_field(store, make_record):
    full = make_record(
        tenant="tenant-ü-東京",
        kind=7,
        token_format=3,
        ciphertext=bytes(range(256)),
        fingerprint=b"\x00" * 31 + b"\x01",
        deterministic=True,
        subject_ref=b"\x00subject\xff",
        request_id="req-0001",
        request_hash=b"\xfe" * 32,
        created_at=NOW + 0.123456,
        expires_at=NOW + 3600.5,
    )
    bare = make_record()  # every optional field None
    assert statuses(await store.insert_tokens([full, bare], NOW, {})) == [INSERTED, INSERTED]

    got_full, got_bare = await stored(store, [full, bare])
    assert got_full == full
    assert got_bare == bare
    for field in ("ciphertext", "fingerprint", "subject_ref", "request_hash"):
        assert type(getattr(got_full, field)) is bytes, field
    assert got_full.deterministic is True
    assert got_bare.deterministic is False
    for field in ("subject_ref", "request_id", "request_hash", "expires_at"):
        assert getattr(got_bare, field) is None, field


async def test_get_tokens_keeps_order_and_answers_none_for_missing(store, make_record):
    records = [make_record() for _ in range(5)]
    await store.insert_tokens(records, NOW, {})
    wanted = [records[3].token, "tok_missing", records[0].token, records[4].token, "tok_gone"]
    assert await store.get_tokens(wanted) == [records[3], None, records[0], records[4], None]


async def test_get_tokens_answers_every_duplicate(store, make_record):
    record = make_record()
    await store.insert_tokens([record], NOW, {})
    got = await store.get_tokens([record.token, "tok_missing", record.token, record.token])
    assert got == [record, None, record, record]


async def test_get_tokens_of_nothing_is_empty(store):
    assert await store.get_tokens([]) == []


async def test_get_tokens_returns_expired_rows_expiry_is_the_callers_check(store, make_record):
    record = make_record(expires_at=NOW + 1)
    await store.insert_tokens([record], NOW, {})
    # Time passes; nothing purged yet: the row is still there for the caller to judge.
    assert await store.get_tokens([record.token]) == [record]


async def test_many_tokens_in_one_read(store, make_record):
    records = [make_record() for _ in range(1500)]
    await store.insert_tokens(records, NOW, {})
    assert await stored(store, records) == records


# -- insert outcomes ---------------------------------------------------------------


async def test_insert_answers_one_outcome_per_record_in_order(store, make_record):
    records = [make_record() for _ in range(10)]
    outcomes = await store.insert_tokens(records, NOW, {})
    assert statuses(outcomes) == [INSERTED] * 10
    assert all(o.existing is None for o in outcomes)
    assert await stored(store, records) == records


async def test_insert_of_nothing_is_empty(store):
    assert await store.insert_tokens([], NOW, {}) == []


async def test_deterministic_key_already_stored(store, make_record):
    first = make_record(deterministic=True, fingerprint=b"F" * 32)
    again = make_record(deterministic=True, fingerprint=b"F" * 32)
    await store.insert_tokens([first], NOW, {})

    [outcome] = await store.insert_tokens([again], NOW, {})
    assert outcome.status is DET_EXISTS
    assert outcome.existing == first
    assert await stored(store, [again]) == [None]


@pytest.mark.parametrize(
    "change",
    [
        {"tenant": "tenant-b"},
        {"kind": 2},
        {"token_format": 2},
        {"fingerprint": b"G" * 32},
        {"deterministic": False},
    ],
    ids=["other-tenant", "other-kind", "other-format", "other-fingerprint", "non-deterministic"],
)
async def test_deterministic_key_is_tenant_kind_format_fingerprint(store, make_record, change):
    first = make_record(deterministic=True, fingerprint=b"F" * 32)
    await store.insert_tokens([first], NOW, {})
    other = make_record(**{"deterministic": True, "fingerprint": b"F" * 32, **change})
    assert statuses(await store.insert_tokens([other], NOW, {})) == [INSERTED]
    assert await stored(store, [first, other]) == [first, other]


async def test_non_deterministic_rows_never_match(store, make_record):
    random_row = make_record(deterministic=False, fingerprint=b"F" * 32)
    await store.insert_tokens([random_row], NOW, {})
    # Neither a later deterministic record nor another random one finds it.
    det = make_record(deterministic=True, fingerprint=b"F" * 32)
    rnd = make_record(deterministic=False, fingerprint=b"F" * 32)
    assert statuses(await store.insert_tokens([det, rnd], NOW, {})) == [INSERTED, INSERTED]
    assert await stored(store, [random_row, det, rnd]) == [random_row, det, rnd]


async def test_request_id_already_used(store, make_record):
    first = make_record(request_id="req-1", request_hash=b"h1")
    retry = make_record(request_id="req-1", request_hash=b"h1")
    await store.insert_tokens([first], NOW, {})

    [outcome] = await store.insert_tokens([retry], NOW, {})
    assert outcome.status is REQ_EXISTS
    assert outcome.existing == first
    assert await stored(store, [retry]) == [None]


async def test_request_id_reused_for_another_request_inserts_nothing(store, make_record):
    first = make_record(request_id="req-1", request_hash=b"h1")
    await store.insert_tokens([first], NOW, {})
    other = make_record()
    reuse = make_record(request_id="req-1", request_hash=b"h2")

    outcomes = await store.insert_tokens([other, reuse], NOW, {})
    assert [o.status for o in outcomes] == [InsertStatus.ABORTED, InsertStatus.REQUEST_REUSED]
    assert outcomes[1].existing == first
    assert await stored(store, [other, reuse]) == [None, None]


async def test_request_id_reused_within_one_call(store, make_record):
    first = make_record(request_id="req-1", request_hash=b"h1")
    reuse = make_record(request_id="req-1", request_hash=b"h2")
    outcomes = await store.insert_tokens([first, reuse], NOW, {})
    assert statuses(outcomes) == [ABORTED, InsertStatus.REQUEST_REUSED]
    # The earlier use was this call's own record, never written: nothing to point at.
    assert outcomes[1].existing is None
    assert await stored(store, [first, reuse]) == [None, None]


async def test_request_id_answered_by_a_deterministic_hit_stays_reserved(store, make_record):
    holder = make_record(deterministic=True, fingerprint=b"F" * 32)
    await store.insert_tokens([holder], NOW, {})
    hit = make_record(
        deterministic=True, fingerprint=b"F" * 32, request_id="req-9", request_hash=b"h1"
    )
    [outcome] = await store.insert_tokens([hit], NOW, {})
    assert outcome.status is DET_EXISTS
    assert outcome.existing == holder

    # The id now belongs to that request, answered with the holder's token.
    retry = make_record(request_id="req-9", request_hash=b"h1")
    [outcome] = await store.insert_tokens([retry], NOW, {})
    assert outcome.status is REQ_EXISTS
    assert outcome.existing == holder
    other = make_record(request_id="req-9", request_hash=b"h2")
    [outcome] = await store.insert_tokens([other], NOW, {})
    assert outcome.status is InsertStatus.REQUEST_REUSED
    assert outcome.existing == holder
    assert await stored(store, [retry, other]) == [None, None]
    # Only within its tenant.
    elsewhere = make_record(tenant="tenant-b", request_id="req-9", request_hash=b"h2")
    assert statuses(await store.insert_tokens([elsewhere], NOW, {})) == [INSERTED]


async def test_reservation_by_a_deterministic_hit_in_one_call(store, make_record):
    holder = make_record(deterministic=True, fingerprint=b"F" * 32)
    await store.insert_tokens([holder], NOW, {})
    hit = make_record(
        deterministic=True, fingerprint=b"F" * 32, request_id="req-9", request_hash=b"h1"
    )
    again = make_record(request_id="req-9", request_hash=b"h1")
    outcomes = await store.insert_tokens([hit, again], NOW, {})
    assert statuses(outcomes) == [DET_EXISTS, REQ_EXISTS]
    assert [o.existing for o in outcomes] == [holder, holder]
    assert await stored(store, [again]) == [None]


async def test_aborted_call_reserves_no_request_id(store, make_record):
    holder = make_record(deterministic=True, fingerprint=b"F" * 32)
    await store.insert_tokens([holder], NOW, {})
    hit = make_record(
        deterministic=True, fingerprint=b"F" * 32, request_id="req-9", request_hash=b"h1"
    )
    clash = make_record(token=holder.token)
    outcomes = await store.insert_tokens([hit, clash], NOW, {})
    assert statuses(outcomes) == [DET_EXISTS, TAKEN]

    fresh = make_record(request_id="req-9", request_hash=b"h2")
    assert statuses(await store.insert_tokens([fresh], NOW, {})) == [INSERTED]
    assert await stored(store, [fresh]) == [fresh]


@pytest.mark.parametrize("ends", ["deleted", "expired"])
async def test_reservation_ends_with_the_token_it_was_answered_with(store, make_record, ends):
    holder = make_record(deterministic=True, fingerprint=b"F" * 32, expires_at=NOW + 10)
    await store.insert_tokens([holder], NOW, {})
    hit = make_record(
        deterministic=True, fingerprint=b"F" * 32, request_id="req-9", request_hash=b"h1"
    )
    assert statuses(await store.insert_tokens([hit], NOW, {})) == [DET_EXISTS]

    later = NOW
    if ends == "deleted":
        assert await store.delete_token(holder.tenant, holder.token) is True
    else:
        later = NOW + 10
    fresh = make_record(request_id="req-9", request_hash=b"h2")
    assert statuses(await store.insert_tokens([fresh], later, {})) == [INSERTED]
    assert await stored(store, [fresh]) == [fresh]


async def test_request_id_is_per_tenant(store, make_record):
    first = make_record(request_id="req-1")
    other_tenant = make_record(request_id="req-1", tenant="tenant-b")
    await store.insert_tokens([first], NOW, {})
    assert statuses(await store.insert_tokens([other_tenant], NOW, {})) == [INSERTED]


async def test_resubmitting_the_same_record_is_idempotent_not_a_collision(store, make_record):
    """A retried write (ack lost) resends the same token: it finds itself, not a clash."""
    with_request = make_record(request_id="req-1", request_hash=b"h")
    deterministic = make_record(deterministic=True)
    await store.insert_tokens([with_request, deterministic], NOW, {})

    outcomes = await store.insert_tokens([with_request, deterministic], NOW, {})
    assert statuses(outcomes) == [REQ_EXISTS, DET_EXISTS]
    assert [o.existing for o in outcomes] == [with_request, deterministic]


async def test_taken_token_aborts_the_whole_call(store, make_record):
    holder = make_record()
    await store.insert_tokens([holder], NOW, {})
    fresh1, clash, fresh2 = make_record(), make_record(token=holder.token), make_record()

    outcomes = await store.insert_tokens([fresh1, clash, fresh2], NOW, {})
    assert statuses(outcomes) == [ABORTED, TAKEN, ABORTED]
    assert await store.get_tokens([fresh1.token, fresh2.token]) == [None, None]
    assert await stored(store, [holder]) == [holder]  # the holder is untouched


async def test_tokens_are_unique_across_tenants(store, make_record):
    holder = make_record(tenant="tenant-a")
    await store.insert_tokens([holder], NOW, {})
    clash = make_record(tenant="tenant-b", token=holder.token)
    assert statuses(await store.insert_tokens([clash], NOW, {})) == [TAKEN]
    assert await stored(store, [holder]) == [holder]


async def test_taken_call_still_reports_records_that_already_exist(store, make_record):
    holder = make_record()
    det = make_record(deterministic=True)
    req = make_record(request_id="req-1")
    await store.insert_tokens([holder, det, req], NOW, {})
    again_det = make_record(deterministic=True, fingerprint=det.fingerprint)
    again_req = make_record(request_id="req-1")
    clash = make_record(token=holder.token)

    outcomes = await store.insert_tokens([again_det, clash, again_req], NOW, {})
    assert statuses(outcomes) == [DET_EXISTS, TAKEN, REQ_EXISTS]
    assert [outcomes[0].existing, outcomes[2].existing] == [det, req]


async def test_taken_call_does_not_affect_other_calls_in_the_same_commit(store, make_record):
    holder = make_record()
    await store.insert_tokens([holder], NOW, {})
    calls = [[make_record(), make_record()] for _ in range(8)]
    calls[3] = [make_record(), make_record(token=holder.token), make_record()]

    results = await asyncio.gather(*(store.insert_tokens(c, NOW, {}) for c in calls))

    for i, (call, outcomes) in enumerate(zip(calls, results, strict=True)):
        if i == 3:
            assert statuses(outcomes) == [ABORTED, TAKEN, ABORTED]
            assert await store.get_tokens([call[0].token, call[2].token]) == [None, None]
        else:
            assert statuses(outcomes) == [INSERTED, INSERTED]
            assert await stored(store, call) == call


async def test_two_deterministic_records_of_one_key_in_one_call(store, make_record):
    first = make_record(deterministic=True, fingerprint=b"F" * 32)
    second = make_record(deterministic=True, fingerprint=b"F" * 32)
    outcomes = await store.insert_tokens([first, second], NOW, {})
    assert statuses(outcomes) == [INSERTED, DET_EXISTS]
    assert outcomes[1].existing is not None
    assert outcomes[1].existing.token == first.token
    assert await stored(store, [first, second]) == [first, None]


async def test_two_records_of_one_request_id_in_one_call(store, make_record):
    first = make_record(request_id="req-1")
    second = make_record(request_id="req-1")
    outcomes = await store.insert_tokens([first, second], NOW, {})
    assert statuses(outcomes) == [INSERTED, REQ_EXISTS]
    assert outcomes[1].existing is not None
    assert outcomes[1].existing.token == first.token
    assert await stored(store, [first, second]) == [first, None]


async def test_two_records_of_one_token_in_one_call(store, make_record):
    first = make_record(token="tok_same")
    second = make_record(token="tok_same")
    outcomes = await store.insert_tokens([first, second], NOW, {})
    assert statuses(outcomes) == [ABORTED, TAKEN]
    assert await store.get_tokens(["tok_same"]) == [None]


async def test_aborted_call_never_points_at_its_own_unwritten_records(store, make_record):
    """`existing` must name a stored row: a record of an aborted call is not one.

    Here the second deterministic record matches the first of the same call, and the
    call is then aborted by the taken token: answering DETERMINISTIC_EXISTS with the
    (never written) first record would hand out a token that does not exist.
    """
    holder = make_record()
    await store.insert_tokens([holder], NOW, {})
    first = make_record(deterministic=True, fingerprint=b"F" * 32)
    second = make_record(deterministic=True, fingerprint=b"F" * 32)
    by_request = make_record(request_id="req-1")
    again_request = make_record(request_id="req-1")
    clash = make_record(token=holder.token)

    outcomes = await store.insert_tokens([first, second, by_request, again_request, clash], NOW, {})

    assert outcomes[4].status is TAKEN
    assert outcomes[0].status is ABORTED
    assert outcomes[2].status is ABORTED
    for outcome in outcomes:
        if outcome.existing is not None:
            [row] = await store.get_tokens([outcome.existing.token])
            assert row == outcome.existing, outcome.status
    assert await stored(store, [first, second, by_request, again_request]) == [None] * 4


# -- expiry ------------------------------------------------------------------------


@pytest.mark.parametrize("expires_at", [NOW - 60, NOW], ids=["expired-earlier", "expires-now"])
async def test_expired_row_frees_its_token(store, make_record, expires_at):
    old = make_record(token="tok_reused", expires_at=expires_at)
    await store.insert_tokens([old], NOW - 3600, {})
    new = make_record(token="tok_reused")
    assert statuses(await store.insert_tokens([new], NOW, {})) == [INSERTED]
    assert await store.get_tokens(["tok_reused"]) == [new]


@pytest.mark.parametrize("expires_at", [NOW - 60, NOW], ids=["expired-earlier", "expires-now"])
async def test_expired_row_frees_its_deterministic_key(store, make_record, expires_at):
    old = make_record(deterministic=True, fingerprint=b"F" * 32, expires_at=expires_at)
    await store.insert_tokens([old], NOW - 3600, {})
    new = make_record(deterministic=True, fingerprint=b"F" * 32)
    assert statuses(await store.insert_tokens([new], NOW, {})) == [INSERTED]
    assert await stored(store, [new]) == [new]


@pytest.mark.parametrize("expires_at", [NOW - 60, NOW], ids=["expired-earlier", "expires-now"])
async def test_expired_row_frees_its_request_id(store, make_record, expires_at):
    old = make_record(request_id="req-1", expires_at=expires_at)
    await store.insert_tokens([old], NOW - 3600, {})
    new = make_record(request_id="req-1")
    assert statuses(await store.insert_tokens([new], NOW, {})) == [INSERTED]
    assert await stored(store, [new]) == [new]


async def test_live_row_with_expiry_still_blocks(store, make_record):
    holder = make_record(
        token="tok_live", deterministic=True, request_id="req-1", expires_at=NOW + 0.5
    )
    await store.insert_tokens([holder], NOW - 10, {})
    det = make_record(deterministic=True, fingerprint=holder.fingerprint)
    req = make_record(request_id="req-1")
    clash = make_record(token="tok_live")
    assert statuses(await store.insert_tokens([det], NOW, {})) == [DET_EXISTS]
    assert statuses(await store.insert_tokens([req], NOW, {})) == [REQ_EXISTS]
    assert statuses(await store.insert_tokens([clash], NOW, {})) == [TAKEN]
    assert await store.get_tokens(["tok_live"]) == [holder]


# -- delete and purge --------------------------------------------------------------


async def test_delete_token_only_for_its_tenant(store, make_record):
    record = make_record(tenant="tenant-a")
    await store.insert_tokens([record], NOW, {})

    assert await store.delete_token("tenant-b", record.token) is False
    assert await stored(store, [record]) == [record]

    assert await store.delete_token("tenant-a", record.token) is True
    assert await stored(store, [record]) == [None]
    assert await store.delete_token("tenant-a", record.token) is False


async def test_delete_of_unknown_token(store):
    assert await store.delete_token("tenant-a", "tok_never") is False


async def test_deleted_row_frees_token_and_deterministic_key(store, make_record):
    old = make_record(token="tok_x", deterministic=True, fingerprint=b"F" * 32)
    await store.insert_tokens([old], NOW, {})
    assert await store.delete_token(old.tenant, old.token) is True
    new = make_record(token="tok_x", deterministic=True, fingerprint=b"F" * 32)
    assert statuses(await store.insert_tokens([new], NOW, {})) == [INSERTED]
    assert await store.get_tokens(["tok_x"]) == [new]


async def test_purge_expired_deletes_exactly_the_expired_rows_up_to_limit(store, make_record):
    expired = [make_record(expires_at=NOW - 100 + i) for i in range(4)]
    expired.append(make_record(expires_at=NOW))  # expires_at <= now counts as expired
    live = [make_record(expires_at=NOW + 0.5), make_record(expires_at=NOW + 3600)]
    forever = [make_record(), make_record()]
    await store.insert_tokens(expired + live + forever, NOW - 1000, {})

    assert await store.purge_expired(NOW, 3) == 3
    remaining = [r for r in await stored(store, expired) if r is not None]
    assert len(remaining) == 2
    assert await store.purge_expired(NOW, 100) == 2
    assert await store.purge_expired(NOW, 100) == 0

    assert await stored(store, expired) == [None] * 5
    assert await stored(store, live + forever) == live + forever


async def test_purge_on_an_empty_store(store):
    assert await store.purge_expired(NOW, 10) == 0


# -- usage counters ----------------------------------------------------------------


async def encryptions(store):
    return {row.version: row.encryptions for row in await store.key_versions()}


async def test_encryptions_are_added_to_key_version_counters(store, make_record):
    await store.add_key_version(b"wrapped-dek-2", "kek-test", NOW, primary=True)
    await store.insert_tokens([make_record()], NOW, {1: 5})
    await store.insert_tokens([make_record(key_version=2)], NOW, {1: 2, 2: 7})
    assert await encryptions(store) == {1: 7, 2: 7}


async def test_encryptions_are_summed_across_concurrent_calls(store, make_record):
    await asyncio.gather(*(store.insert_tokens([make_record()], NOW, {1: 3}) for _ in range(40)))
    assert await encryptions(store) == {1: 120}


async def test_encryptions_count_even_when_nothing_is_inserted(store, make_record):
    """The encryptions happened (nonces drawn) whatever the outcome; the budget sees them.

    The domain layer relies on this: after a TOKEN_TAKEN it resends only the newly
    sealed records' count, so an aborted call's count must not be lost.
    """
    holder = make_record(deterministic=True)
    await store.insert_tokens([holder], NOW, {1: 1})
    same_key = make_record(deterministic=True, fingerprint=holder.fingerprint)
    await store.insert_tokens([same_key], NOW, {1: 1})  # DETERMINISTIC_EXISTS
    clash = make_record(token=holder.token)
    await store.insert_tokens([make_record(), clash], NOW, {1: 2})  # aborted
    assert await encryptions(store) == {1: 4}
