"""More than one master key at once, while a master-key rotation moves the wrapped keys.

The primary KEK wraps everything new. Unwrapping uses the KEK a row's ``kek_id`` names
when the caller knows it (``unwrap_with``); otherwise the primary first, then the
others: AES-GCM's tag makes a try under the wrong KEK fail cleanly, never yield a wrong
key. An HSM that cannot answer is an error at once, not a reason to try the next KEK.
"""

from __future__ import annotations

from collections.abc import Sequence

from vault.crypto.base import KekProvider
from vault.errors import DecryptionError, FailedPreconditionError
from vault.secrets import SecretBytes

__all__ = ["KekRing"]


class KekRing:
    """A KekProvider over a primary KEK and decrypt-only older (or newer) ones."""

    __slots__ = ("_by_id", "_order", "_primary")

    def __init__(self, primary: KekProvider, others: Sequence[KekProvider] = ()) -> None:
        self._primary = primary
        self._order = [primary, *(k for k in others if k.kek_id != primary.kek_id)]
        self._by_id = {k.kek_id: k for k in self._order}

    def __repr__(self) -> str:
        return f"KekRing(primary={self._primary.kek_id}, keks={len(self._order)})"

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("KekRing cannot be pickled")

    @property
    def kek_id(self) -> str:
        return self._primary.kek_id

    @property
    def primary(self) -> KekProvider:
        return self._primary

    @property
    def kek_ids(self) -> list[str]:
        return list(self._by_id)

    def has(self, kek_id: str) -> bool:
        return kek_id in self._by_id

    def promote(self, kek_id: str) -> KekRing:
        """The same KEKs with ``kek_id``'s as the primary."""
        chosen = self._by_id[kek_id]
        return KekRing(chosen, [k for k in self._order if k is not chosen])

    def wrap(self, key: SecretBytes, label: bytes) -> bytes:
        return self._primary.wrap(key, label)

    def unwrap(self, wrapped: bytes, label: bytes) -> SecretBytes:
        for kek in self._order:
            try:
                return kek.unwrap(wrapped, label)
            except DecryptionError:
                continue
        raise DecryptionError

    def unwrap_with(self, kek_id: str, wrapped: bytes, label: bytes) -> SecretBytes:
        """Unwrap with the KEK ``kek_id`` names (a row's own record of its wrapper)."""
        kek = self._by_id.get(kek_id)
        if kek is None:
            raise FailedPreconditionError(
                f"a key is wrapped by master key {kek_id}, which is not configured",
                reason="MASTER_KEY_NOT_CONFIGURED",
            )
        return kek.unwrap(wrapped, label)
