"""Key material as the use cases see it: the keyring and per-tenant fingerprint keys.

Combines the store's wrapped keys with the master key (KEK provider). Fingerprint keys
are created on a tenant's first tokenize; two processes racing to create one agree on
whichever reached the store first.
"""

from __future__ import annotations

import asyncio

from vault.clock import Clock
from vault.crypto.base import KekProvider
from vault.crypto.keyring import (
    Fingerprinter,
    Keyring,
    KeyState,
    WrappedKeyVersion,
    dek_label,
    fingerprint_label,
    new_data_key,
)
from vault.storage.base import Store

__all__ = ["KeyMaterial", "init_keyring"]


async def init_keyring(store: Store, kek: KekProvider, clock: Clock) -> bool:
    """Create data-key version 1 on an empty store; False if versions already exist."""
    if await store.key_versions():
        return False
    dek = new_data_key()
    # Version numbers start at 1; the label binds the wrapped key to its version.
    wrapped = kek.wrap(dek, dek_label(1))
    await store.add_key_version(wrapped, kek.kek_id, clock.now(), primary=True)
    return True


class KeyMaterial:
    """The loaded keyring and a cache of tenants' fingerprinters."""

    def __init__(self, store: Store, kek: KekProvider, clock: Clock) -> None:
        self._store = store
        self._kek = kek
        self._clock = clock
        self._keyring: Keyring | None = None
        self._fingerprinters: dict[str, Fingerprinter] = {}
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return "KeyMaterial()"

    @property
    def kek(self) -> KekProvider:
        return self._kek

    def use_kek(self, kek: KekProvider) -> None:
        """Wrap and unwrap under another master key from now on (after a rotate-master;
        the unwrapped keys themselves do not change)."""
        self._kek = kek

    async def load(self) -> None:
        """(Re)load the keyring from the store; picks up versions added by other processes."""
        rows = await self._store.key_versions()
        self._keyring = Keyring(
            self._kek,
            [WrappedKeyVersion(r.version, KeyState(r.state), r.wrapped_key) for r in rows],
        )

    @property
    def keyring(self) -> Keyring:
        if self._keyring is None:
            raise RuntimeError("keys not loaded")
        return self._keyring

    def cached_fingerprinter(self, tenant: str) -> Fingerprinter | None:
        return self._fingerprinters.get(tenant)

    async def existing_fingerprinter(self, tenant: str) -> Fingerprinter | None:
        """The tenant's fingerprint key, or None when it has none (it never stored a
        value): what a read path asks, as it must not write a key to answer NOT_FOUND."""
        found = self._fingerprinters.get(tenant)
        if found is not None:
            return found
        if await self._store.fingerprint_key(tenant) is None:
            return None
        return await self.fingerprinter(tenant)

    async def fingerprinter(self, tenant: str) -> Fingerprinter:
        """The tenant's fingerprint key, created on its first use."""
        found = self._fingerprinters.get(tenant)
        if found is not None:
            return found
        async with self._lock:
            found = self._fingerprinters.get(tenant)
            if found is not None:
                return found
            label = fingerprint_label(tenant)
            wrapped = await self._store.fingerprint_key(tenant)
            if wrapped is None:
                candidate = self._kek.wrap(new_data_key(), label)
                wrapped = await self._store.put_fingerprint_key(
                    tenant, candidate, self._kek.kek_id, self._clock.now()
                )
            found = Fingerprinter(self._kek.unwrap(wrapped, label))
            self._fingerprinters[tenant] = found
            return found
