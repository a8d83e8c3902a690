"""Interfaces of the crypto layer."""

from __future__ import annotations

from typing import Protocol

from vault.secrets import SecretBytes

__all__ = ["KekProvider"]


class KekProvider(Protocol):
    """Holds the master key (KEK) and wraps/unwraps data keys with it.

    ``label`` binds a wrapped key to what it is for (b"dek:3", b"fpk:tenant"), so a
    wrapped key copied into another row fails to unwrap.
    """

    @property
    def kek_id(self) -> str:
        """A stable, non-secret name for this master key (recorded next to wrapped keys)."""
        ...

    def wrap(self, key: SecretBytes, label: bytes) -> bytes: ...

    def unwrap(self, wrapped: bytes, label: bytes) -> SecretBytes: ...
