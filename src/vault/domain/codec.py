"""The record codec, written once: the payload (value, subject, metadata), the optional
subject-key layer, and the data-key seal with its AAD.

Tokenize and corrections seal through :class:`RecordCodec`, reveals open through it, and
the rewrap re-seals the data-key layer with :func:`reseal`; nothing else knows the layout.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from vault.crypto.aead import RecordKey, record_aad
from vault.crypto.keyring import Keyring
from vault.crypto.subject import SubjectKey, subject_layer_aad
from vault.domain import kinds
from vault.domain.keys import KeyMaterial
from vault.domain.model import DataKind, Value
from vault.domain.subject_keys import SubjectKeys
from vault.errors import FailedPreconditionError, InternalError, NotFoundError
from vault.storage.base import TokenRecord

__all__ = [
    "KINDS",
    "Opened",
    "RecordCodec",
    "Sealed",
    "decode_payload",
    "encode_payload",
    "reseal",
]

KINDS = {int(k): k for k in DataKind}
_PAYLOAD_VERSION = 1
# First byte of a data-key layer plaintext that is a subject-key layer (nonce || GCM of
# the payload under the subject key) rather than the payload itself.
_SUBJECT_LAYER = b"\x02"
_NO_SUBJECT_KEYS: dict[bytes, SubjectKey | None] = {}
_LEN = struct.Struct(">I")


def encode_payload(value: bytes, subject: str, metadata: Mapping[str, str]) -> bytes:
    """What is encrypted: version, value, subject, metadata (JSON, only when present)."""
    subject_b = subject.encode()
    meta_b = json.dumps(dict(metadata), separators=(",", ":")).encode() if metadata else b""
    return b"".join(
        (
            bytes((_PAYLOAD_VERSION,)),
            _LEN.pack(len(value)),
            value,
            _LEN.pack(len(subject_b)),
            subject_b,
            meta_b,
        )
    )


def decode_payload(data: bytes) -> tuple[bytes, str, dict[str, str]]:
    """The canonical value, subject and metadata of a decrypted payload."""
    try:
        if data[0] != _PAYLOAD_VERSION:
            raise ValueError  # noqa: TRY301 - mapped to one error below
        (vlen,) = _LEN.unpack_from(data, 1)
        value = data[5 : 5 + vlen]
        pos = 5 + vlen
        (slen,) = _LEN.unpack_from(data, pos)
        subject = data[pos + 4 : pos + 4 + slen].decode()
        rest = data[pos + 4 + slen :]
        metadata = json.loads(rest) if rest else {}
    except (IndexError, ValueError, struct.error, UnicodeDecodeError):
        raise InternalError("stored value is malformed") from None
    return value, subject, metadata


@dataclass(frozen=True, slots=True)
class Opened:
    """A stored record, decrypted."""

    kind: DataKind
    value: Value
    subject: str
    metadata: dict[str, str]

    def __repr__(self) -> str:
        return f"Opened(kind={self.kind.name})"


@dataclass(frozen=True, slots=True)
class Sealed:
    """A payload sealed under a data key: the version that encrypted it and the blob."""

    key_version: int
    ciphertext: bytes


def reseal(rec: TokenRecord, keyring: Keyring, primary: RecordKey) -> bytes:
    """The record's data-key layer re-encrypted under ``primary`` (the rewrap): the inner
    layers are left as they are. Raises DecryptionError if the old layer does not open."""
    old_aad = record_aad(rec.tenant, rec.kind, rec.token_format, rec.token, rec.key_version)
    plain = keyring.key(rec.key_version).decrypt(rec.ciphertext, old_aad)
    aad = record_aad(rec.tenant, rec.kind, rec.token_format, rec.token, primary.version)
    return primary.encrypt(plain, aad)


class RecordCodec:
    """Seals and opens records under the data keys and, for a subject's record, the
    subject key. ``subject_keys`` is None only where no subject is ever given (the
    in-process benchmark)."""

    def __init__(self, keys: KeyMaterial, subject_keys: SubjectKeys | None) -> None:
        self._keys = keys
        self.subject_keys = subject_keys

    def __repr__(self) -> str:
        return "RecordCodec()"

    def seal(
        self,
        tenant: str,
        kind: int,
        token_format: int,
        token: str,
        payload: bytes,
        subject_key: SubjectKey | None,
    ) -> Sealed:
        """Encrypt a payload (see :func:`encode_payload`) under the primary data key, inside
        the subject-key layer when ``subject_key`` is given."""
        if subject_key is not None:
            inner = subject_key.encrypt(
                payload, subject_layer_aad(tenant, kind, token_format, token)
            )
            payload = _SUBJECT_LAYER + inner
        primary = self._keys.keyring.primary
        aad = record_aad(tenant, kind, token_format, token, primary.version)
        return Sealed(primary.version, primary.encrypt(payload, aad))

    def open(self, row: TokenRecord, subject_keys: Mapping[bytes, SubjectKey | None]) -> Opened:
        """Decrypt a row: the data-key layer, then the subject-key layer if it has one. A
        row whose subject key was destroyed (an erased subject) is NOT_FOUND."""
        kind = KINDS[row.kind]
        aad = record_aad(row.tenant, row.kind, row.token_format, row.token, row.key_version)
        payload = self._keys.keyring.key(row.key_version).decrypt(row.ciphertext, aad)
        if payload[:1] == _SUBJECT_LAYER:
            skey = subject_keys.get(row.subject_ref) if row.subject_ref is not None else None
            if skey is None:
                raise NotFoundError("token not found", reason="TOKEN_NOT_FOUND")
            payload = skey.decrypt(
                payload[1:], subject_layer_aad(row.tenant, row.kind, row.token_format, row.token)
            )
        canon, subject, metadata = decode_payload(payload)
        return Opened(kind, kinds.value_from_canonical(kind, canon), subject, metadata)

    async def subject_key_for_write(self, tenant: str, subject_ref: bytes) -> SubjectKey:
        """The subject's key, created on first use."""
        if self.subject_keys is None:
            raise FailedPreconditionError(
                "this vault has no subject-key store", reason="SUBJECT_KEYS_UNAVAILABLE"
            )
        return await self.subject_keys.for_write(tenant, subject_ref)

    async def subject_keys_for(self, rows: Sequence[TokenRecord]) -> dict[bytes, SubjectKey | None]:
        """The subject keys the rows need (by subject_ref; None where destroyed)."""
        refs = {(r.tenant, r.subject_ref) for r in rows if r.subject_ref is not None}
        if not refs:
            return _NO_SUBJECT_KEYS
        if self.subject_keys is None:
            return dict.fromkeys((ref for _, ref in refs), None)
        return {ref: await self.subject_keys.for_read(tenant, ref) for tenant, ref in refs}
