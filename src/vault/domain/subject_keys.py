"""Per-subject keys as the use cases see them: created on a subject's first value,
cached unwrapped (bounded), destroyed on erasure.

The cache is per process. An erasure drops its entry here at once; another process
re-reads a cached key from the subject-key store when the entry is older than
``recheck_seconds`` (default 2 s), so it stops using a destroyed key within that window.
A value tokenized for the subject inside the window, on another process, is written
under a key that no longer exists: it can never be read (it answers NOT_FOUND, as an
erased value does) and a second erasure removes its row.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from vault.clock import Clock
from vault.crypto.base import KekProvider
from vault.crypto.keyring import new_data_key
from vault.crypto.subject import (
    SUBJECT_WRAP_KEY_NAME,
    SubjectKey,
    SubjectKeyWrapper,
    new_subject_key,
    subject_key_label,
)
from vault.storage.base import Store, SubjectKeyStore

__all__ = ["SubjectKeys"]

_Ref = tuple[str, bytes]


class SubjectKeys:
    """Subject keys by (tenant, subject_ref), through a bounded LRU cache."""

    def __init__(
        self,
        key_store: SubjectKeyStore,
        wrapper: SubjectKeyWrapper,
        clock: Clock,
        *,
        max_entries: int = 10_000,
        recheck_seconds: float = 2.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._key_store = key_store
        self._wrapper = wrapper
        self._clock = clock
        self._max_entries = max_entries
        self._recheck = recheck_seconds
        self._monotonic = monotonic
        self._cache: OrderedDict[_Ref, tuple[SubjectKey, float]] = OrderedDict()

    def __repr__(self) -> str:
        return f"SubjectKeys({len(self._cache)} cached)"

    @classmethod
    async def open(
        cls,
        store: Store,
        key_store: SubjectKeyStore,
        kek: KekProvider,
        clock: Clock,
        *,
        max_entries: int = 10_000,
        recheck_seconds: float = 2.0,
    ) -> SubjectKeys:
        """Unwrap (or, on first use, create) the service key that wraps subject keys."""
        label = SUBJECT_WRAP_KEY_NAME.encode()
        wrapped = await store.service_key(SUBJECT_WRAP_KEY_NAME)
        if wrapped is None:
            candidate = kek.wrap(new_data_key(), label)
            wrapped = await store.put_service_key(
                SUBJECT_WRAP_KEY_NAME, candidate, kek.kek_id, clock.now()
            )
        wrapper = SubjectKeyWrapper(kek.unwrap(wrapped, label))
        return cls(
            key_store, wrapper, clock, max_entries=max_entries, recheck_seconds=recheck_seconds
        )

    def _cached(self, ref: _Ref) -> SubjectKey | None:
        hit = self._cache.get(ref)
        if hit is None:
            return None
        if self._monotonic() - hit[1] > self._recheck:
            del self._cache[ref]
            return None
        self._cache.move_to_end(ref)
        return hit[0]

    def _remember(self, ref: _Ref, wrapped: bytes) -> SubjectKey:
        key = SubjectKey(self._wrapper.unwrap(wrapped, subject_key_label(*ref)))
        self._cache[ref] = (key, self._monotonic())
        self._cache.move_to_end(ref)
        while len(self._cache) > self._max_entries:
            self._cache.popitem(last=False)
        return key

    async def for_write(self, tenant: str, subject_ref: bytes) -> SubjectKey:
        """The subject's key, created if it has none (processes racing agree on one)."""
        ref = (tenant, subject_ref)
        key = self._cached(ref)
        if key is not None:
            return key
        wrapped = await self._key_store.subject_key(tenant, subject_ref)
        if wrapped is None:
            candidate = self._wrapper.wrap(new_subject_key(), subject_key_label(*ref))
            wrapped = await self._key_store.put_subject_key(
                tenant, subject_ref, candidate, self._clock.now()
            )
        return self._remember(ref, wrapped)

    async def for_read(self, tenant: str, subject_ref: bytes) -> SubjectKey | None:
        """The subject's key, or None: never created, or destroyed by an erasure."""
        ref = (tenant, subject_ref)
        key = self._cached(ref)
        if key is not None:
            return key
        wrapped = await self._key_store.subject_key(tenant, subject_ref)
        return None if wrapped is None else self._remember(ref, wrapped)

    async def destroy(self, tenant: str, subject_ref: bytes) -> bool:
        """Forget the key here and destroy it in the store; False if it had none."""
        self._cache.pop((tenant, subject_ref), None)
        return await self._key_store.destroy_subject_key(tenant, subject_ref)
