"""domain.callers over a real SQLite store and audit trail, with a manual clock: what
each change does to the callers and what the trail says about it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from vault.audit.trail import AuditTrail
from vault.auth.apikeys import hash_secret
from vault.clock import ManualClock
from vault.crypto.keyfile import KeyFileKek
from vault.domain.callers import CallerAdministration, EventRecorder, NewCaller
from vault.errors import AlreadyExistsError, FailedPreconditionError, NotFoundError
from vault.storage.sqlite import SqliteStore

OPERATOR = "vaultctl:ops"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(tmp_path / "vault.db")
    await store.open()
    yield store
    await store.close()


@pytest.fixture
async def trail(store: SqliteStore, tmp_path: Path) -> AsyncIterator[AuditTrail]:
    kek = KeyFileKek.create(tmp_path / "master.key")
    trail = await AuditTrail.open(store, kek, ManualClock(), None)
    yield trail
    trail.close()


def _admin(store: SqliteStore, trail: AuditTrail, clock: ManualClock) -> CallerAdministration:
    async def open_trail() -> EventRecorder:
        return trail

    return CallerAdministration(store, clock, open_trail, OPERATOR)


async def _records(store: SqliteStore) -> list[tuple[str, str, str, str, str]]:
    rows = await store.audit_records(0, 100)
    return [(r.caller, r.tenant, r.action, r.outcome, r.reason) for r in rows]


async def test_add_mints_a_key_stored_only_as_a_hash_and_records_it(store, trail):
    clock = ManualClock()
    key = await _admin(store, trail, clock).add(
        NewCaller("app", "t1", ("tokenize",), expires_at=clock.now() + 60)
    )
    assert key is not None
    [row] = await store.callers()
    assert (row.name, row.tenant, row.scopes, row.created_at) == (
        "app",
        "t1",
        ("tokenize",),
        clock.now(),
    )
    assert row.key_hash == hash_secret(key.secret)
    assert await _records(store) == [(OPERATOR, "t1", "caller.add", "ok", "")]
    [record] = await store.audit_records(0, 1)
    assert key.text not in repr(record.detail)
    assert dict(record.detail)["expires"].startswith("2027-01-15T")


async def test_a_certificate_caller_gets_no_key(store, trail):
    got = await _admin(store, trail, ManualClock()).add(
        NewCaller("pos", "t1", ("tokenize",), cert_identity="spiffe://pos")
    )
    assert got is None
    [row] = await store.callers()
    assert (row.key_hash, row.cert_identity) == (None, "spiffe://pos")


async def test_a_taken_name_is_refused_and_the_refusal_recorded(store, trail):
    admin = _admin(store, trail, ManualClock())
    await admin.add(NewCaller("app", "t1", ("tokenize",)))
    with pytest.raises(AlreadyExistsError):
        await admin.add(NewCaller("app", "t2", ("detokenize",)))
    assert [r.tenant for r in await admin.list()] == ["t1"]
    assert (await _records(store))[-1][2:4] == ("caller.add", "error")


async def test_add_makes_no_change_when_the_trail_cannot_open(store):
    async def sealed() -> EventRecorder:
        raise FailedPreconditionError("the vault is sealed", reason="VAULT_SEALED")

    admin = CallerAdministration(store, ManualClock(), sealed, OPERATOR)
    with pytest.raises(FailedPreconditionError):
        await admin.add(NewCaller("app", "t1", ("tokenize",)))
    assert await store.callers() == []


async def test_revoke_records_it_and_an_unknown_name_is_not_found(store, trail):
    clock = ManualClock()
    admin = _admin(store, trail, clock)
    await admin.add(NewCaller("app", "t1", ("tokenize",)))
    clock.advance(5)
    await admin.revoke("app")
    [row] = await admin.list()
    assert row.revoked_at == clock.now()
    with pytest.raises(NotFoundError, match="no active caller with that name"):
        await admin.revoke("app")
    assert [r[2:] for r in await _records(store)][1:] == [
        ("caller.revoke", "ok", ""),
        ("caller.revoke", "error", "CALLER_NOT_FOUND"),
    ]


async def test_revoke_revokes_even_when_the_trail_cannot_record_and_says_so(store, trail):
    clock = ManualClock()
    await _admin(store, trail, clock).add(NewCaller("app", "t1", ("tokenize",)))

    async def sealed() -> EventRecorder:
        raise FailedPreconditionError("the vault is sealed", reason="VAULT_SEALED")

    admin = CallerAdministration(store, clock, sealed, OPERATOR)
    with pytest.raises(FailedPreconditionError) as raised:
        await admin.revoke("app")
    assert str(raised.value) == (
        "revoked app, but the audit trail could not record it: the vault is sealed"
    )
    [row] = await store.callers()
    assert row.revoked_at is not None
    with pytest.raises(FailedPreconditionError, match="sealed"):
        await admin.revoke("nobody")  # nothing revoked: the trail's refusal as it is
