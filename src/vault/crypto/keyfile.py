"""The embedded default master key: 32 random bytes in a file only its owner can read.

Data keys are wrapped with AES-256-GCM under it, the label (what the key is for) as AAD.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from vault.errors import DecryptionError, FailedPreconditionError
from vault.secrets import SecretBytes

__all__ = ["KeyFileKek"]

_MAGIC = b"vault-kek-v1\n"
_KEY_BYTES = 32
_NONCE_BYTES = 12


class KeyFileKek:
    """Master key read from a 0600 file; refuses files that group or others can read."""

    __slots__ = ("_aead", "_kek_id")

    def __init__(self, key: SecretBytes, *, source: str = "file") -> None:
        """``source`` prefixes the kek_id: ``file`` for a key file, ``shares`` for a key
        rebuilt from custodian shares (same key, same wrapping, never on disk)."""
        if len(key) != _KEY_BYTES:
            raise ValueError("a master key is 32 bytes")
        self._aead = AESGCM(key.reveal())
        # A public name for the key: a hash that cannot be turned back into it.
        digest = hashlib.sha256(b"vault kek id\x00" + key.reveal()).hexdigest()
        self._kek_id = f"{source}:{digest[:16]}"

    def __repr__(self) -> str:
        return f"KeyFileKek({self._kek_id})"

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("KeyFileKek cannot be pickled")

    @property
    def kek_id(self) -> str:
        return self._kek_id

    @classmethod
    def create(cls, path: Path) -> KeyFileKek:
        """Write a new random master key; never overwrites an existing file."""
        key = os.urandom(_KEY_BYTES)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, _MAGIC + key.hex().encode() + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        return cls(SecretBytes(key))

    @classmethod
    def load(cls, path: Path) -> KeyFileKek:
        try:
            info = path.stat()
        except FileNotFoundError:
            raise FailedPreconditionError(
                "master key file not found (run `vaultctl keys init` or serve --dev)",
                reason="MASTER_KEY_MISSING",
            ) from None
        if stat.S_IMODE(info.st_mode) & 0o077:
            raise FailedPreconditionError(
                "master key file is readable by group or others; chmod 600 it",
                reason="MASTER_KEY_PERMISSIONS",
            )
        content = path.read_bytes()
        if not content.startswith(_MAGIC):
            raise FailedPreconditionError(
                "master key file is not a vault key file", reason="MASTER_KEY_INVALID"
            )
        try:
            key = bytes.fromhex(content[len(_MAGIC) :].strip().decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            key = b""
        if len(key) != _KEY_BYTES:
            raise FailedPreconditionError(
                "master key file is not a vault key file", reason="MASTER_KEY_INVALID"
            )
        return cls(SecretBytes(key))

    def wrap(self, key: SecretBytes, label: bytes) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, key.reveal(), b"wrap\x00" + label)

    def unwrap(self, wrapped: bytes, label: bytes) -> SecretBytes:
        try:
            return SecretBytes(
                self._aead.decrypt(
                    wrapped[:_NONCE_BYTES], wrapped[_NONCE_BYTES:], b"wrap\x00" + label
                )
            )
        except (InvalidTag, ValueError):
            raise DecryptionError from None
