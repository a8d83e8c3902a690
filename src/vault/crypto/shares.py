"""Custodian shares of the master key: k-of-n Shamir secret sharing (split knowledge).

The library is PyCryptodome's ``Crypto.Protocol.SecretSharing.Shamir``: maintained,
widely packaged, and a straight implementation over GF(2^128) without extras to get
wrong. It shares 16-byte secrets, so the 32-byte master key is shared as its two halves,
each with its own random polynomial, and custodian i holds point i of both: fewer than
K custodians learn nothing about either half, K of them rebuild both.

A share is one line of text a person can copy:
``vault-share-v1:<index>:<64 hex digits>:<8 hex digits of checksum>``; the checksum
catches a mistyped or truncated share before anything is combined. The store keeps a
SHA-256 verifier of each share (shares are 256-bit random points, so a hash reveals
nothing), so a share of another split, or a right-looking wrong one, is refused at once.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Sequence

from Crypto.Protocol.SecretSharing import Shamir

from vault.errors import FieldViolation, InvalidArgumentError
from vault.secrets import SecretBytes

__all__ = [
    "MAX_SHARES",
    "MIN_THRESHOLD",
    "Share",
    "combine_shares",
    "parse_share",
    "split_master_key",
]

MIN_THRESHOLD = 2  # one custodian alone must never hold the key
MAX_SHARES = 255
_KEY_BYTES = 32
_HALF = 16
_PREFIX = "vault-share-v1"
_SHARE_RE = re.compile(
    r"vault-share-v1:(?P<index>[0-9]{1,3}):(?P<value>[0-9a-f]{64}):(?P<check>[0-9a-f]{8})"
)


def _checksum(index: int, value_hex: str) -> str:
    return hashlib.sha256(f"{_PREFIX}:{index}:{value_hex}".encode()).hexdigest()[:8]


class Share:
    """One custodian's share: its index (1..N) and its 32 secret bytes."""

    __slots__ = ("index", "value")

    def __init__(self, index: int, value: SecretBytes) -> None:
        self.index = index
        self.value = value

    def __repr__(self) -> str:
        return f"Share(index={self.index}, <redacted>)"

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("Share cannot be pickled")

    def text(self) -> str:
        """The share as a custodian keeps it (shown once, at `keys init --shares`)."""
        value_hex = self.value.reveal().hex()
        return f"{_PREFIX}:{self.index}:{value_hex}:{_checksum(self.index, value_hex)}"

    def verifier(self) -> bytes:
        """A public fingerprint of the share, stored to recognise it later."""
        return hashlib.sha256(
            b"vault share verifier\x00" + self.index.to_bytes(1, "big") + self.value.reveal()
        ).digest()

    def matches(self, verifier: bytes) -> bool:
        return hmac.compare_digest(self.verifier(), verifier)


def split_master_key(key: SecretBytes, threshold: int, count: int) -> list[Share]:
    """N shares of the key, any K of which rebuild it."""
    if not MIN_THRESHOLD <= threshold <= count <= MAX_SHARES:
        raise ValueError("shares need 2 <= threshold <= count <= 255")
    if len(key) != _KEY_BYTES:
        raise ValueError("a master key is 32 bytes")
    raw = key.reveal()
    low = Shamir.split(threshold, count, raw[:_HALF])
    high = Shamir.split(threshold, count, raw[_HALF:])
    return [
        Share(i, SecretBytes(a + b)) for (i, a), (j, b) in zip(low, high, strict=True) if i == j
    ]


def parse_share(text: str) -> Share:
    """A share typed or pasted by a custodian; INVALID_ARGUMENT (never echoing it) if it
    is not one."""
    match = _SHARE_RE.fullmatch(text.strip().lower())
    if match is None or _checksum(int(match["index"]), match["value"]) != match["check"]:
        raise InvalidArgumentError(
            FieldViolation("share", "not a vault share (check it was copied whole)"),
            reason="SHARE_MALFORMED",
        )
    index = int(match["index"])
    if not 1 <= index <= MAX_SHARES:
        raise InvalidArgumentError(
            FieldViolation("share", "not a vault share (check it was copied whole)"),
            reason="SHARE_MALFORMED",
        )
    return Share(index, SecretBytes(bytes.fromhex(match["value"])))


def combine_shares(shares: Sequence[Share]) -> SecretBytes:
    """The key from K distinct shares (the caller checks the result: a wrong share set
    yields a wrong key, not an error)."""
    low = [(s.index, s.value.reveal()[:_HALF]) for s in shares]
    high = [(s.index, s.value.reveal()[_HALF:]) for s in shares]
    return SecretBytes(Shamir.combine(low) + Shamir.combine(high))
