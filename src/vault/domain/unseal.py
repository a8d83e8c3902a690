"""Unsealing: collecting custodian shares until K of them rebuild the master key.

Each share is checked on its own against the verifier stored at `keys init --shares`
(so a wrong share is refused at once and names no other), duplicates are refused, and
the progress so far is kept across refusals. At K the key is rebuilt and its kek_id
compared with the one recorded; the caller then proves it on the data keys. Progress
lives only in this process's memory: a restart starts from zero.
"""

from __future__ import annotations

from dataclasses import dataclass

from vault.crypto.keyfile import KeyFileKek
from vault.crypto.shares import Share, combine_shares, parse_share, split_master_key
from vault.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    FieldViolation,
    InvalidArgumentError,
)
from vault.secrets import SecretBytes
from vault.storage.base import ShareSchemeRow, Store

__all__ = [
    "SHARES_SOURCE",
    "UnsealProgress",
    "Unsealer",
    "kek_from_share_texts",
    "new_share_scheme",
]

# The kek_id prefix of a master key rebuilt from shares.
SHARES_SOURCE = "shares"


@dataclass(frozen=True, slots=True)
class UnsealProgress:
    sealed: bool
    threshold: int  # K (0 when the master key is not split)
    submitted: int  # distinct valid shares held so far
    share_count: int  # N


def new_share_scheme(
    key: SecretBytes, threshold: int, count: int, now: float
) -> tuple[ShareSchemeRow, list[Share]]:
    """Split a new master key: the facts to store and the shares to hand out."""
    shares = split_master_key(key, threshold, count)
    kek = KeyFileKek(key, source=SHARES_SOURCE)
    scheme = ShareSchemeRow(kek.kek_id, threshold, count, tuple(s.verifier() for s in shares), now)
    return scheme, shares


class Unsealer:
    """Shares submitted so far for one store's split master key."""

    def __init__(self, scheme: ShareSchemeRow | None) -> None:
        self._scheme = scheme
        self._pending: dict[int, Share] = {}
        self._sealed = scheme is not None

    def __repr__(self) -> str:
        return f"Unsealer(sealed={self._sealed}, submitted={len(self._pending)})"

    def progress(self) -> UnsealProgress:
        s = self._scheme
        return UnsealProgress(
            self._sealed,
            s.threshold if s else 0,
            len(self._pending),
            s.share_count if s else 0,
        )

    def reset(self) -> None:
        self._pending.clear()

    def mark_unsealed(self) -> None:
        self._sealed = False
        self._pending.clear()

    def submit(self, share: Share) -> KeyFileKek | None:
        """Add a share; at the K-th, the rebuilt master key (not yet proven on the data
        keys: the caller does that, and calls ``reset`` if it fails)."""
        scheme = self._scheme
        if scheme is None or not self._sealed:
            raise FailedPreconditionError("the vault is not sealed", reason="NOT_SEALED")
        if not share.index <= scheme.share_count or not share.matches(
            scheme.verifiers[share.index - 1]
        ):
            raise InvalidArgumentError(
                FieldViolation("share", "not a share of this vault's master key"),
                reason="SHARE_UNKNOWN",
            )
        if share.index in self._pending:
            raise AlreadyExistsError(
                "that share was submitted already", reason="SHARE_ALREADY_SUBMITTED"
            )
        self._pending[share.index] = share
        if len(self._pending) < scheme.threshold:
            return None
        kek = KeyFileKek(combine_shares(list(self._pending.values())), source=SHARES_SOURCE)
        if kek.kek_id != scheme.kek_id:
            # Every share matched its verifier, so only a store edited behind the vault's
            # back gets here; start over rather than keep shares that do not fit.
            self._pending.clear()
            raise FailedPreconditionError(
                "the shares do not rebuild the recorded master key", reason="SHARES_MISMATCH"
            )
        return kek


async def kek_from_share_texts(store: Store, texts: list[str]) -> KeyFileKek:
    """The master key from K share lines (vaultctl --shares-from), or a one-line refusal."""
    scheme = await store.share_scheme()
    if scheme is None:
        raise FailedPreconditionError(
            "the store's master key is not split into shares", reason="NOT_SEALED"
        )
    unsealer = Unsealer(scheme)
    for text in texts:
        kek = unsealer.submit(parse_share(text))
        if kek is not None:
            return kek
    raise FailedPreconditionError(
        f"the vault is sealed: {scheme.threshold} shares are needed, "
        f"{unsealer.progress().submitted} were given",
        reason="VAULT_SEALED",
    )
