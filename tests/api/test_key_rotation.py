"""Tink-style data-key rotation through a real server, its SQLite store and the domain
code: v1 primary → rotate → v2 primary, v1 active → rewrap → retire v1, checking at each
step which version new records use and that every record still decrypts."""

from __future__ import annotations

import sqlite3

import pytest
from api_helpers import PURPOSE, tokenize_request

from vault.clock import SystemClock
from vault.crypto.keyfile import KeyFileKek
from vault.domain import rotation
from vault.errors import DecryptionError, FailedPreconditionError, NotFoundError
from vault.v1 import token_service_pb2 as pb


async def _tokenize(vault, n: int, tag: str) -> dict[str, str]:
    out = {}
    for i in range(n):
        value = f"{tag}-{i}@example.com"
        resp = await vault.stub.Tokenize(tokenize_request("EMAIL", value), metadata=vault.md)
        out[resp.token] = value
    return out


async def _reveal_all(vault, tokens: dict[str, str]) -> None:
    for token, value in tokens.items():
        resp = await vault.stub.Detokenize(
            pb.DetokenizeRequest(token=token, purpose=PURPOSE), metadata=vault.md
        )
        assert resp.text == value


def _versions_of(vault, tokens: dict[str, str]) -> set[int]:
    marks = ",".join("?" * len(tokens))
    sql = "SELECT DISTINCT key_version FROM tokens WHERE token IN (" + marks + ")"  # noqa: S608
    rows = vault.sql(sql, tuple(tokens))
    return {r[0] for r in rows}


async def _states(store) -> dict[int, tuple[str, int]]:
    return {s.version: (s.state, s.records) for s in await rotation.key_status(store)}


async def test_rotation_walks_the_states(vault):
    store = vault.server.store
    kek = KeyFileKek.load(vault.server.config.master_key_path)
    clock = SystemClock()

    # v1 primary: records are written under it.
    old = await _tokenize(vault, 20, "old")
    assert _versions_of(vault, old) == {1}
    assert await _states(store) == {1: ("primary", 20)}

    # Rotate: v2 primary, v1 active. Old records still decrypt; new ones use v2.
    assert await rotation.rotate(store, kek, clock) == (1, 2)
    await vault.server.keys.load()  # what the periodic refresh does
    assert await _states(store) == {1: ("active", 20), 2: ("primary", 0)}
    new = await _tokenize(vault, 10, "new")
    assert _versions_of(vault, new) == {2}
    await _reveal_all(vault, old | new)

    # v1 is still in use: retiring it is refused and changes nothing.
    before = await store.key_versions()
    for version, error, reason in (
        (1, FailedPreconditionError, "KEY_VERSION_IN_USE"),
        (2, FailedPreconditionError, "KEY_VERSION_PRIMARY"),
        (9, NotFoundError, "KEY_VERSION_UNKNOWN"),
    ):
        with pytest.raises(error) as err:
            await rotation.retire(store, version)
        assert err.value.reason == reason
    assert await store.key_versions() == before

    # Rewrap: every record moves to v2, and still decrypts (under v2, AAD of v2).
    seen: list[rotation.RewrapProgress] = []
    result = await rotation.rewrap(store, kek, clock, batch=7, progress=seen.append)
    assert (result.rewrapped, result.skipped, result.failed, result.remaining) == (20, 0, 0, 0)
    assert len(seen) == 3
    assert seen[-1].remaining == 0
    assert _versions_of(vault, old | new) == {2}
    status = {s.version: s for s in await rotation.key_status(store)}
    assert status[2].encryptions == 30  # 10 tokenizes + 20 rewraps
    assert (status[1].state, status[1].records) == ("active", 0)
    await _reveal_all(vault, old | new)
    # Nothing left: a second run does nothing.
    again = await rotation.rewrap(store, kek, clock)
    assert (again.rewrapped, again.remaining) == (0, 0)

    # Retire v1: destroyed (no wrapped key), and everything still decrypts.
    await rotation.retire(store, 1)
    rows = {r.version: r for r in await store.key_versions()}
    assert (rows[1].state, rows[1].wrapped_key) == ("retired", None)
    await vault.server.keys.load()
    assert vault.server.keys.keyring.versions == [2]
    with pytest.raises(DecryptionError):
        vault.server.keys.keyring.key(1)
    await _reveal_all(vault, old | new)
    with pytest.raises(FailedPreconditionError) as err:
        await rotation.retire(store, 1)
    assert err.value.reason == "KEY_VERSION_RETIRED"

    # The store itself refuses a record under the destroyed version.
    with pytest.raises(sqlite3.IntegrityError, match="retired"):
        vault.sql("UPDATE tokens SET key_version = 1 WHERE rowid = (SELECT min(rowid) FROM tokens)")


async def test_a_second_rewrap_is_refused_while_the_lease_is_live(vault):
    store = vault.server.store
    kek = KeyFileKek.load(vault.server.config.master_key_path)
    now = SystemClock().now()
    assert await store.take_rewrap_lease("someone-else", now, now + 60)
    with pytest.raises(FailedPreconditionError) as err:
        await rotation.rewrap(store, kek, SystemClock())
    assert err.value.reason == "REWRAP_RUNNING"
    # The refused run did not release the other holder's lease.
    assert not await store.take_rewrap_lease("third", now, now + 60)
