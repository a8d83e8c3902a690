"""Per-subject keys: the layer that makes an erased subject's values unreadable in backups.

A value that belongs to a data subject is encrypted twice: first under the subject's own
random 256-bit key (this module), then, as every record, under the data key (aead.py).
The data-key layer is what rotation and rewrap touch; they never need the subject key.
Erasing a subject destroys its key, so a copy of the database taken earlier holds only
ciphertext that nothing can open (crypto-shredding), as long as the copy does not come
with the subject-key store too (see the README: what a backup must exclude).

Two subkeys are derived from the subject key, one for AES-256-GCM and one for HMAC: the
fingerprint and request hash stored with a subject's row are bound to the subject key
as well, because a tenant-wide HMAC of a PAN whose last four (and BIN) the token shows
could be searched by brute force in an old backup.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from vault.crypto.aead import KEY_BYTES, RecordKey, record_aad
from vault.secrets import SecretBytes

__all__ = [
    "SUBJECT_WRAP_KEY_NAME",
    "SubjectKey",
    "SubjectKeyWrapper",
    "new_subject_key",
    "subject_key_label",
    "subject_layer_aad",
]

# The vault-wide service key that wraps every subject key (itself wrapped by the master key).
SUBJECT_WRAP_KEY_NAME = "subject-wrap:1"

_ENC_INFO = b"vault subject key: aes-256-gcm"
_MAC_INFO = b"vault subject key: hmac-sha-256"


def new_subject_key() -> SecretBytes:
    return SecretBytes(os.urandom(KEY_BYTES))


def subject_key_label(tenant: str, subject_ref: bytes) -> bytes:
    """Binds a wrapped subject key to its row: copied to another subject, it fails to unwrap."""
    tenant_b = tenant.encode()
    return b"subject:" + len(tenant_b).to_bytes(2, "big") + tenant_b + subject_ref


def subject_layer_aad(tenant: str, kind: int, token_format: int, token: str) -> bytes:
    """The inner layer's AAD: the record's, without the data-key version (which a rewrap
    changes while the inner layer stays as it is)."""
    return b"subject-layer\x00" + record_aad(tenant, kind, token_format, token, 0)


class SubjectKey:
    """One subject's key, as an AES-GCM key and an HMAC key derived from it."""

    __slots__ = ("_aead", "_mac")

    def __init__(self, key: SecretBytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError("a subject key is 32 bytes")
        raw = key.reveal()
        enc = hmac.new(raw, _ENC_INFO, hashlib.sha256).digest()
        self._aead = RecordKey(0, SecretBytes(enc))
        self._mac = hmac.new(hmac.new(raw, _MAC_INFO, hashlib.sha256).digest(), digestmod="sha256")

    def __repr__(self) -> str:
        return "SubjectKey(<redacted>)"

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("SubjectKey cannot be pickled")

    def encrypt(self, plaintext: bytes, aad: bytes) -> bytes:
        return self._aead.encrypt(plaintext, aad)

    def decrypt(self, blob: bytes, aad: bytes) -> bytes:
        return self._aead.decrypt(blob, aad)

    def bind(self, digest: bytes) -> bytes:
        """A tenant-wide HMAC (fingerprint, request hash) made specific to this subject."""
        mac = self._mac.copy()
        mac.update(digest)
        return mac.digest()


class SubjectKeyWrapper:
    """Wraps subject keys with AES-256-GCM under the service key ``subject-wrap:1``, the
    subject's label as AAD (so a wrapped key moved to another subject fails to unwrap)."""

    __slots__ = ("_aead",)

    def __init__(self, service_key: SecretBytes) -> None:
        if len(service_key) != KEY_BYTES:
            raise ValueError("a service key is 32 bytes")
        self._aead = RecordKey(0, service_key)

    def __repr__(self) -> str:
        return "SubjectKeyWrapper(<redacted>)"

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("SubjectKeyWrapper cannot be pickled")

    def wrap(self, key: SecretBytes, label: bytes) -> bytes:
        return self._aead.encrypt(key.reveal(), label)

    def unwrap(self, wrapped: bytes, label: bytes) -> SecretBytes:
        return SecretBytes(self._aead.decrypt(wrapped, label))
