"""Store contract: data-key versions, fingerprint keys and callers."""

from __future__ import annotations

import asyncio

import pytest

from vault.errors import AlreadyExistsError

NOW = 1_800_000_000.0  # the suite's fixed clock (as in conftest.py)


def states(rows):
    return {row.version: row.state for row in rows}


# -- data-key versions -------------------------------------------------------------


async def test_no_key_versions_in_a_new_store(empty_store):
    assert await empty_store.key_versions() == []


async def test_key_versions_are_numbered_from_one(empty_store):
    assert await empty_store.add_key_version(b"w1", "kek-a", NOW, primary=True) == 1
    assert await empty_store.add_key_version(b"w2", "kek-a", NOW + 1, primary=False) == 2
    assert await empty_store.add_key_version(b"w3", "kek-b", NOW + 2, primary=False) == 3
    rows = await empty_store.key_versions()
    assert [r.version for r in rows] == [1, 2, 3]


async def test_key_version_row_round_trip(empty_store):
    await empty_store.add_key_version(b"\x00wrapped\xff", "file:0123abcd", NOW + 0.25, primary=True)
    [row] = await empty_store.key_versions()
    assert row.version == 1
    assert row.state == "primary"
    assert row.wrapped_key == b"\x00wrapped\xff"
    assert type(row.wrapped_key) is bytes
    assert row.kek_id == "file:0123abcd"
    assert row.created_at == NOW + 0.25
    assert row.encryptions == 0


async def test_new_active_version_leaves_the_primary_alone(empty_store):
    await empty_store.add_key_version(b"w1", "kek", NOW, primary=True)
    await empty_store.add_key_version(b"w2", "kek", NOW, primary=False)
    assert states(await empty_store.key_versions()) == {1: "primary", 2: "active"}


async def test_new_primary_demotes_the_old_primary_to_active(empty_store):
    await empty_store.add_key_version(b"w1", "kek", NOW, primary=True)
    await empty_store.add_key_version(b"w2", "kek", NOW, primary=False)
    await empty_store.add_key_version(b"w3", "kek", NOW, primary=True)
    assert states(await empty_store.key_versions()) == {1: "active", 2: "active", 3: "primary"}
    await empty_store.add_key_version(b"w4", "kek", NOW, primary=True)
    rows = await empty_store.key_versions()
    assert states(rows) == {1: "active", 2: "active", 3: "active", 4: "primary"}
    # Demotion changes the state only: the wrapped keys are all still there.
    assert [r.wrapped_key for r in rows] == [b"w1", b"w2", b"w3", b"w4"]


async def test_concurrent_key_versions_get_distinct_numbers(empty_store):
    numbers = await asyncio.gather(
        *(empty_store.add_key_version(b"w%d" % i, "kek", NOW, primary=True) for i in range(10))
    )
    assert sorted(numbers) == list(range(1, 11))
    rows = await empty_store.key_versions()
    assert [r.state for r in rows].count("primary") == 1
    # Each number names the key its own call submitted.
    by_version = {r.version: r.wrapped_key for r in rows}
    assert {by_version[n] for n in numbers} == {b"w%d" % i for i in range(10)}


# -- fingerprint keys --------------------------------------------------------------


async def test_fingerprint_key_absent_until_put(empty_store):
    assert await empty_store.fingerprint_key("tenant-a") is None


async def test_fingerprint_key_first_writer_wins(empty_store):
    assert await empty_store.put_fingerprint_key("tenant-a", b"\x00first", "kek", NOW) == (
        b"\x00first"
    )
    assert await empty_store.fingerprint_key("tenant-a") == b"\x00first"
    # A second writer (another process that raced) gets the first key back.
    assert await empty_store.put_fingerprint_key("tenant-a", b"second", "kek", NOW) == (
        b"\x00first"
    )
    assert await empty_store.fingerprint_key("tenant-a") == b"\x00first"
    assert type(await empty_store.fingerprint_key("tenant-a")) is bytes


async def test_fingerprint_keys_are_per_tenant(empty_store):
    await empty_store.put_fingerprint_key("tenant-a", b"key-a", "kek", NOW)
    assert await empty_store.fingerprint_key("tenant-b") is None
    assert await empty_store.put_fingerprint_key("tenant-b", b"key-b", "kek", NOW) == b"key-b"
    assert await empty_store.fingerprint_key("tenant-a") == b"key-a"


async def test_concurrent_fingerprint_key_puts_agree(empty_store):
    candidates = [b"candidate-%d" % i for i in range(20)]
    results = await asyncio.gather(
        *(empty_store.put_fingerprint_key("tenant-a", c, "kek", NOW) for c in candidates)
    )
    assert len(set(results)) == 1
    assert results[0] in candidates
    assert await empty_store.fingerprint_key("tenant-a") == results[0]


# -- callers -----------------------------------------------------------------------


async def test_caller_round_trip(empty_store, make_caller):
    caller = make_caller(
        "checkout",
        tenant="tenant-ü",
        scopes=("tokenize", "detokenize:PAN", "reveal-masked"),
        key_hash=b"\x00" * 32,
        created_at=NOW + 0.5,
        expires_at=NOW + 86400,
    )
    await empty_store.add_caller(caller)
    assert await empty_store.caller_by_key_id("kid_checkout") == caller
    assert await empty_store.callers() == [caller]


async def test_caller_without_api_key_or_scopes(empty_store, make_caller):
    mtls = make_caller("spiffe://payments/ledger", scopes=(), key_id=None, key_hash=None)
    await empty_store.add_caller(mtls)
    assert await empty_store.callers() == [mtls]


async def test_caller_by_unknown_key_id(empty_store, make_caller):
    await empty_store.add_caller(make_caller("checkout"))
    assert await empty_store.caller_by_key_id("kid_nobody") is None


async def test_duplicate_caller_name_is_refused(empty_store, make_caller):
    original = make_caller("checkout")
    await empty_store.add_caller(original)
    with pytest.raises(AlreadyExistsError):
        await empty_store.add_caller(make_caller("checkout", tenant="tenant-b", key_id="kid_2"))
    assert await empty_store.callers() == [original]
    assert await empty_store.caller_by_key_id("kid_2") is None


async def test_refused_caller_does_not_affect_concurrent_writes(
    empty_store, make_caller, make_record
):
    await empty_store.add_key_version(b"w1", "kek", NOW, primary=True)
    await empty_store.add_caller(make_caller("checkout"))
    record = make_record()
    results = await asyncio.gather(
        empty_store.add_caller(make_caller("checkout", key_id="kid_dup")),
        empty_store.add_caller(make_caller("ledger")),
        empty_store.insert_tokens([record], NOW, {}),
        return_exceptions=True,
    )
    assert isinstance(results[0], AlreadyExistsError)
    assert results[1] is None
    assert [o.status.value for o in results[2]] == ["inserted"]
    assert [c.name for c in await empty_store.callers()] == ["checkout", "ledger"]
    assert await empty_store.get_tokens([record.token]) == [record]


async def test_callers_lists_every_caller(empty_store, make_caller):
    callers = [make_caller(name) for name in ("ledger", "checkout", "risk")]
    for caller in callers:
        await empty_store.add_caller(caller)
    listed = await empty_store.callers()
    assert sorted(listed, key=lambda c: c.name) == sorted(callers, key=lambda c: c.name)


async def test_revoke_caller_once(empty_store, make_caller):
    await empty_store.add_caller(make_caller("checkout"))
    await empty_store.add_caller(make_caller("ledger"))

    assert await empty_store.revoke_caller("checkout", NOW + 10) is True
    assert await empty_store.revoke_caller("checkout", NOW + 20) is False

    revoked = await empty_store.caller_by_key_id("kid_checkout")
    assert revoked is not None
    assert revoked.revoked_at == NOW + 10  # the first revocation time stays
    other = await empty_store.caller_by_key_id("kid_ledger")
    assert other is not None
    assert other.revoked_at is None


async def test_revoke_unknown_caller(empty_store):
    assert await empty_store.revoke_caller("nobody", NOW) is False
