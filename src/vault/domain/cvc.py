"""CVC handling: a CVC is never written to disk. It is held in memory (the ephemeral
store) for a short TTL and a set number of reveals, has no fingerprint, cannot be
corrected, and goes with its subject's erasure."""

from __future__ import annotations

from collections.abc import Sequence

from vault.auth.policy import Caller
from vault.domain import kinds
from vault.domain.ephemeral import EphemeralEntry, EphemeralStore
from vault.domain.model import DataKind, TokenFormat
from vault.domain.results import Revealed, TokenInfo, Tokenized
from vault.domain.reveal_policy import RevealPolicy
from vault.domain.validation import Limits, TokenizeItem
from vault.errors import FailedPreconditionError

__all__ = ["CvcHandling", "HeldCvcs"]


class HeldCvcs:
    """The CVCs of one reveal call, by position in the call: spent when found, given back
    if the call reveals nothing after all."""

    def __init__(self, memory: EphemeralStore, entries: dict[int, EphemeralEntry]) -> None:
        self._memory = memory
        self.entries = entries
        # Spent now (no await in between): a concurrent call cannot reveal them too.
        self._values = {i: memory.take(entry) for i, entry in entries.items()}

    def __repr__(self) -> str:
        return f"HeldCvcs({len(self.entries)})"

    def __contains__(self, position: int) -> bool:
        return position in self.entries

    def revealed(self, position: int) -> Revealed:
        entry = self.entries[position]
        return Revealed(
            entry.token,
            DataKind.CVC,
            self._values[position],
            dict(entry.metadata),
            entry.subject,
        )

    def give_back(self) -> None:
        for i, entry in self.entries.items():
            self._memory.give_back(entry, self._values[i])


class CvcHandling:
    """The CVC side of tokenize, reveal, describe, delete, correct and erase."""

    def __init__(self, memory: EphemeralStore, limits: Limits) -> None:
        self.memory = memory
        self._limits = limits

    def __repr__(self) -> str:
        return "CvcHandling()"

    def hold(self, caller: Caller, item: TokenizeItem, value: str) -> Tokenized:
        """Keep a validated CVC in memory and answer its token."""
        entry = self.memory.put(
            caller.tenant,
            value,
            item.subject,
            dict(item.metadata),
            item.ttl_seconds or self._limits.cvc_ttl_seconds,
            self._limits.cvc_reveals,
        )
        return Tokenized(
            token=entry.token,
            fingerprint="",  # none for a CVC: it would index a 3-4 digit value
            masked=kinds.mask(DataKind.CVC, value),
            created=True,
            expires_at=entry.expires_at,
        )

    def take(self, caller: Caller, tokens: Sequence[str], policy: RevealPolicy) -> HeldCvcs:
        """The caller's CVCs among ``tokens``, spent; KIND_NOT_ALLOWED (nothing spent) if
        the caller may not reveal CVCs."""
        entries = {
            i: entry
            for i, token in enumerate(tokens)
            if (entry := self.memory.find(caller.tenant, token)) is not None
        }
        if entries:
            policy.check_kinds(caller, (DataKind.CVC,))
        return HeldCvcs(self.memory, entries)

    def describe(self, caller: Caller, token: str) -> TokenInfo | None:
        """The metadata of the caller's CVC token, or None if it holds none by that name."""
        entry = self.memory.find(caller.tenant, token)
        if entry is None:
            return None
        return TokenInfo(
            token=token,
            kind=DataKind.CVC,
            token_format=TokenFormat.RANDOM,
            masked=kinds.mask(DataKind.CVC, ""),
            fingerprint="",
            subject=entry.subject,
            metadata=dict(entry.metadata),
            deterministic=False,
            created_at=entry.created_at,
            expires_at=entry.expires_at,
            key_version=0,  # never encrypted: held in memory only
        )

    def remove(self, caller: Caller, token: str) -> bool:
        """Drop the caller's CVC; False if it holds none by that name."""
        return self.memory.remove(caller.tenant, token)

    def refuse_correction(self, caller: Caller, token: str) -> None:
        if self.memory.find(caller.tenant, token) is not None:
            raise FailedPreconditionError(
                "a CVC cannot be corrected: tokenize the new one", reason="CVC_NOT_UPDATABLE"
            )

    def erase_subject(self, tenant: str, subject: str) -> int:
        """Drop every CVC of the tenant's subject; returns how many."""
        return self.memory.remove_subject(tenant, subject)

    def purge(self) -> int:
        """Drop expired CVCs; returns how many."""
        return self.memory.purge()
