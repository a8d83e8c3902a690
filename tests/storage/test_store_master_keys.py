"""Store contract: the wrapped-key listing and compare-and-set used by master-key rotation,
and the custodian-share facts of a split master key."""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from vault.storage.base import ShareSchemeRow, WrappedKeyKind, WrappedKeyRow

NOW = 1_800_000_000.0  # the suite's fixed clock (as in conftest.py)

DATA = WrappedKeyKind.DATA_KEY
FINGERPRINT = WrappedKeyKind.FINGERPRINT_KEY
SERVICE = WrappedKeyKind.SERVICE_KEY


async def _seed(store):
    """v1 (from the fixture, primary), v2 retired, a fingerprint key and a service key."""
    await store.add_key_version(b"wrapped-dek-2", "kek-test", NOW, primary=False)
    assert (await store.retire_key_version(2)).value == "retired"
    await store.put_fingerprint_key("tenant-a", b"\x00fpk\xff", "kek-test", NOW)
    await store.put_service_key("audit:1", b"svc", "kek-test", NOW)


async def test_wrapped_keys_lists_every_wrapped_key_but_retired_ones(store):
    await _seed(store)
    rows = await store.wrapped_keys()
    assert sorted(rows, key=lambda r: (r.kind, r.name)) == [
        WrappedKeyRow(DATA, "1", b"wrapped-dek-1", "kek-test"),
        WrappedKeyRow(FINGERPRINT, "tenant-a", b"\x00fpk\xff", "kek-test"),
        WrappedKeyRow(SERVICE, "audit:1", b"svc", "kek-test"),
    ]
    assert all(type(r.wrapped_key) is bytes for r in rows)


async def test_wrapped_keys_of_an_empty_store(empty_store):
    assert await empty_store.wrapped_keys() == []


@pytest.mark.parametrize(
    ("kind", "name", "old"),
    [
        (DATA, "1", b"wrapped-dek-1"),
        (FINGERPRINT, "tenant-a", b"\x00fpk\xff"),
        (SERVICE, "audit:1", b"svc"),
    ],
)
async def test_replace_wrapped_key_is_a_compare_and_set(store, kind, name, old):
    await _seed(store)
    assert await store.replace_wrapped_key(kind, name, old, b"new", "kek-new") is True
    # A second run with the stale old value changes nothing.
    assert await store.replace_wrapped_key(kind, name, old, b"newer", "kek-newer") is False
    rows = {(r.kind, r.name): r for r in await store.wrapped_keys()}
    assert rows[(kind, name)] == WrappedKeyRow(kind, name, b"new", "kek-new")
    # Only that row moved.
    assert sum(r.kek_id == "kek-new" for r in rows.values()) == 1


async def test_replace_wrapped_key_changes_only_the_wrapping(store):
    await store.replace_wrapped_key(DATA, "1", b"wrapped-dek-1", b"w", "kek-new")
    [row] = await store.key_versions()
    assert (row.version, row.state, row.wrapped_key, row.kek_id) == (1, "primary", b"w", "kek-new")


async def test_replace_wrapped_key_of_a_missing_row(store):
    assert await store.replace_wrapped_key(DATA, "9", b"x", b"y", "k") is False
    assert await store.replace_wrapped_key(FINGERPRINT, "nobody", b"x", b"y", "k") is False
    assert await store.replace_wrapped_key(SERVICE, "nothing:1", b"x", b"y", "k") is False


async def test_replace_never_revives_a_retired_key(store):
    await _seed(store)
    assert await store.replace_wrapped_key(DATA, "2", b"wrapped-dek-2", b"y", "k") is False
    rows = {r.version: r for r in await store.key_versions()}
    assert rows[2].wrapped_key is None


def _scheme(kek_id="file:0011223344556677", k=2, n=3):
    digests = tuple(hashlib.sha256(b"share %d" % i).digest() for i in range(1, n + 1))
    return ShareSchemeRow(kek_id, k, n, digests, NOW)


async def test_no_share_scheme_in_a_new_store(empty_store):
    assert await empty_store.share_scheme() is None


async def test_share_scheme_round_trip(empty_store):
    scheme = _scheme(k=3, n=5)
    assert await empty_store.put_share_scheme(scheme) is True
    assert await empty_store.share_scheme() == scheme


async def test_share_scheme_is_written_once(empty_store):
    first = _scheme()
    assert await empty_store.put_share_scheme(first) is True
    assert await empty_store.put_share_scheme(_scheme(kek_id="file:other", k=2, n=2)) is False
    assert await empty_store.share_scheme() == first


async def test_share_scheme_seen_by_another_process(backend):
    one, two = backend.new_store(), backend.new_store()
    await one.open()
    await two.open()
    try:
        await one.put_share_scheme(_scheme())
        assert await two.share_scheme() == _scheme()
    finally:
        await one.close()
        await two.close()


async def test_racing_replaces_of_one_wrapped_key_have_one_winner(store, backend):
    """Two processes re-wrapping the same key from the same old value: exactly one
    compare-and-set succeeds, and the row holds its value."""
    other = backend.new_store()
    await other.open()
    try:
        won = await asyncio.gather(
            *(
                (store, other)[i % 2].replace_wrapped_key(
                    DATA, "1", b"wrapped-dek-1", b"new-%d" % i, f"kek-{i}"
                )
                for i in range(8)
            )
        )
        assert won.count(True) == 1
        winner = won.index(True)
        [row] = await other.wrapped_keys()
        assert (row.wrapped_key, row.kek_id) == (b"new-%d" % winner, f"kek-{winner}")
    finally:
        await other.close()


async def test_racing_share_scheme_puts_have_one_winner(backend):
    stores = [backend.new_store() for _ in range(2)]
    await asyncio.gather(*(s.open() for s in stores))
    try:
        schemes = [_scheme(kek_id=f"file:{i:016x}") for i in range(6)]
        won = await asyncio.gather(
            *(stores[i % 2].put_share_scheme(s) for i, s in enumerate(schemes))
        )
        assert won.count(True) == 1
        assert await stores[1].share_scheme() == schemes[won.index(True)]
    finally:
        await asyncio.gather(*(s.close() for s in stores))
