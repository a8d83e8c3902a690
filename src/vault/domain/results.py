"""What the token use cases answer: a token made, a value revealed, a token described."""

from __future__ import annotations

from dataclasses import dataclass

from vault.domain.model import DataKind, TokenFormat, Value

__all__ = ["Revealed", "TokenInfo", "Tokenized"]


# Not frozen: built once per item on the hot path, where a frozen init costs ~2x.
@dataclass(slots=True)
class Tokenized:
    token: str
    fingerprint: str
    masked: str
    created: bool
    expires_at: float | None


# Not frozen: built once per item on the hot path, where a frozen init costs ~2x.
@dataclass(slots=True)
class Revealed:
    token: str
    kind: DataKind
    value: Value
    metadata: dict[str, str]
    subject: str

    def __repr__(self) -> str:
        return f"Revealed(kind={self.kind.name})"


@dataclass(frozen=True, slots=True)
class TokenInfo:
    token: str
    kind: DataKind
    token_format: TokenFormat
    masked: str
    fingerprint: str
    subject: str
    metadata: dict[str, str]
    deterministic: bool
    created_at: float
    expires_at: float | None
    key_version: int
