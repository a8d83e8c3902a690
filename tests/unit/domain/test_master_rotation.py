"""Master-key rotation on a real SQLite store: every data, fingerprint and service key
moves to the new KEK with its kek_id, records stay as they are, and a run that dies
midway leaves every key readable and is finished by running it again."""

from __future__ import annotations

import os

import pytest

from vault.audit.trail import AUDIT_KEY_NAME, AuditTrail
from vault.clock import ManualClock
from vault.crypto.kekring import KekRing
from vault.crypto.keyfile import KeyFileKek
from vault.domain import rotation
from vault.domain.keys import KeyMaterial, init_keyring
from vault.domain.master_rotation import rotate_master, wrap_label
from vault.errors import DecryptionError
from vault.secrets import SecretBytes
from vault.storage.sqlite import SqliteStore


def new_kek() -> KeyFileKek:
    return KeyFileKek(SecretBytes(os.urandom(32)))


class DyingStore(SqliteStore):
    """Dies (raises) on the n-th replace: a rotate-master killed midway."""

    def __init__(self, path, die_at: int) -> None:
        super().__init__(path)
        self.die_at = die_at
        self.replaced = 0

    async def replace_wrapped_key(self, *args):
        self.replaced += 1
        if self.replaced == self.die_at:
            raise KeyboardInterrupt
        return await super().replace_wrapped_key(*args)


async def _seed(store, kek) -> dict[str, SecretBytes]:
    """Three data-key versions, fingerprint keys of two tenants, the audit key; returns
    each key's plaintext by (kind, name)."""
    clock = ManualClock()
    await init_keyring(store, kek, clock)
    await rotation.rotate(store, kek, clock)
    await rotation.rotate(store, kek, clock)
    keys = KeyMaterial(store, kek, clock)
    await keys.load()
    for tenant in ("tenant-a", "tenant-b"):
        await keys.fingerprinter(tenant)
    await AuditTrail.open(store, kek, clock)
    return {
        (r.kind, r.name): kek.unwrap(r.wrapped_key, wrap_label(r))
        for r in await store.wrapped_keys()
    }


async def _plain(store, kek) -> dict:
    return {
        (r.kind, r.name): kek.unwrap(r.wrapped_key, wrap_label(r))
        for r in await store.wrapped_keys()
    }


async def test_every_wrapped_key_moves_to_the_new_kek(tmp_path):
    old, new = new_kek(), new_kek()
    store = SqliteStore(tmp_path / "vault.db")
    await store.open()
    try:
        before = await _seed(store, old)
        assert len(before) == 3 + 2 + 1
        progress = []
        result = await rotate_master(store, KekRing(old), new, progress=progress.append)
        assert (result.moved, result.total, result.old_kek_ids) == (6, 6, (old.kek_id,))
        assert progress[-1].remaining == 0
        rows = await store.wrapped_keys()
        assert {r.kek_id for r in rows} == {new.kek_id}
        assert await _plain(store, new) == before
        with pytest.raises(DecryptionError):
            await _plain(store, old)
        # A second run finds nothing to do.
        again = await rotate_master(store, KekRing(new), new)
        assert again.moved == 0
        assert {r.name for r in rows if r.kind == "service_key"} == {AUDIT_KEY_NAME}
    finally:
        await store.close()


@pytest.mark.parametrize("die_at", [1, 3, 6])
async def test_a_run_killed_midway_is_finished_by_the_next(tmp_path, die_at):
    old, new = new_kek(), new_kek()
    path = tmp_path / "vault.db"
    store = DyingStore(path, die_at)
    await store.open()
    try:
        before = await _seed(store, old)
        with pytest.raises(KeyboardInterrupt):
            await rotate_master(store, KekRing(old), new)
    finally:
        await store.close()
    # In between, every key is readable under the KEK its row names.
    store = SqliteStore(path)
    await store.open()
    try:
        rows = await store.wrapped_keys()
        assert sum(r.kek_id == new.kek_id for r in rows) == die_at - 1
        both = KekRing(old, [new])
        assert {
            (r.kind, r.name): both.unwrap_with(r.kek_id, r.wrapped_key, wrap_label(r)) for r in rows
        } == before
        # The keyring loads through both while the rotation is unfinished.
        keys = KeyMaterial(store, both, ManualClock())
        await keys.load()
        assert keys.keyring.versions == [1, 2, 3]
        result = await rotate_master(store, both, new)
        assert result.moved == 6 - (die_at - 1)
        assert {r.kek_id for r in await store.wrapped_keys()} == {new.kek_id}
        assert await _plain(store, new) == before
    finally:
        await store.close()
