"""Data-key versions (DEKs) and the per-tenant fingerprint keys.

A keyring is built from the store's wrapped keys, unwrapped by the master key. New
writes use the primary version; reads use whichever version the record names.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import os
from collections.abc import Iterable
from dataclasses import dataclass

from vault.crypto.aead import KEY_BYTES, RecordKey
from vault.crypto.base import KekProvider
from vault.errors import DecryptionError, FailedPreconditionError
from vault.secrets import SecretBytes

__all__ = [
    "Fingerprinter",
    "KeyState",
    "Keyring",
    "WrappedKeyVersion",
    "dek_label",
    "fingerprint_label",
    "new_data_key",
]


class KeyState(enum.StrEnum):
    PRIMARY = "primary"  # encrypts new records (exactly one version)
    ACTIVE = "active"  # decrypts only
    RETIRED = "retired"  # destroyed; no record may name it


@dataclass(frozen=True, slots=True)
class WrappedKeyVersion:
    version: int
    state: KeyState
    wrapped_key: bytes | None  # None once retired (the key is destroyed)


def dek_label(version: int) -> bytes:
    return f"dek:{version}".encode()


def fingerprint_label(tenant: str) -> bytes:
    return b"fpk:" + tenant.encode()


def new_data_key() -> SecretBytes:
    return SecretBytes(os.urandom(KEY_BYTES))


class Keyring:
    """Unwrapped data keys by version, and which one is primary."""

    __slots__ = ("_keys", "_primary")

    def __init__(self, kek: KekProvider, versions: Iterable[WrappedKeyVersion]) -> None:
        keys: dict[int, RecordKey] = {}
        primary: RecordKey | None = None
        for v in versions:
            if v.state is KeyState.RETIRED or v.wrapped_key is None:
                continue
            key = RecordKey(v.version, kek.unwrap(v.wrapped_key, dek_label(v.version)))
            keys[v.version] = key
            if v.state is KeyState.PRIMARY:
                if primary is not None:
                    raise FailedPreconditionError(
                        "keyring has more than one primary version", reason="KEYRING_INVALID"
                    )
                primary = key
        if primary is None:
            raise FailedPreconditionError(
                "keyring has no primary version", reason="KEYRING_INVALID"
            )
        self._keys = keys
        self._primary = primary

    def __repr__(self) -> str:
        return f"Keyring(primary={self._primary.version}, versions={sorted(self._keys)})"

    @property
    def primary(self) -> RecordKey:
        return self._primary

    @property
    def versions(self) -> list[int]:
        return sorted(self._keys)

    def has(self, version: int) -> bool:
        return version in self._keys

    def key(self, version: int) -> RecordKey:
        """The key a record names; a missing or retired version fails like a bad tag."""
        try:
            return self._keys[version]
        except KeyError:
            raise DecryptionError from None


class Fingerprinter:
    """HMAC-SHA-256 under one tenant's fingerprint key (never a data key).

    Keeps a pre-keyed HMAC and copies it per call: 1.45 us instead of 2.1 us.
    """

    __slots__ = ("_base",)

    def __init__(self, key: SecretBytes) -> None:
        self._base = hmac.new(key.reveal(), digestmod=hashlib.sha256)

    def __repr__(self) -> str:
        return "Fingerprinter(<redacted>)"

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("Fingerprinter cannot be pickled")

    def digest(self, domain: bytes, data: bytes) -> bytes:
        """HMAC over a domain-separation prefix (kind, purpose) and the data."""
        mac = self._base.copy()
        mac.update(len(domain).to_bytes(1, "big"))
        mac.update(domain)
        mac.update(data)
        return mac.digest()

    @staticmethod
    def encode(digest: bytes) -> str:
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
