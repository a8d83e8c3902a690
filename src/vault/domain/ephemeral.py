"""Card security codes, held in this process's memory only.

A CVC may be kept until the authorisation that needs it, never after (PCI DSS 3.3.1):
it is never written to the store, the WAL, the audit trail or a log. An entry lives
for a short TTL and a small number of reveals, then its bytes are overwritten and it
is gone. A restart forgets every CVC, by design.

Python cannot promise that no copy of a string survives in freed memory; the value is
kept in a bytearray that is zeroed when the entry goes, the server turns core dumps
off, and the README says to run without swap (or with encrypted swap).
"""

from __future__ import annotations

from dataclasses import dataclass

from vault.clock import Clock
from vault.domain import kinds
from vault.errors import ResourceExhaustedError

__all__ = ["EphemeralEntry", "EphemeralStore"]


@dataclass(slots=True)
class EphemeralEntry:
    token: str
    tenant: str
    value: bytearray  # the CVC digits; zeroed when the entry goes
    subject: str
    metadata: dict[str, str]
    created_at: float
    expires_at: float
    reveals_left: int

    def __repr__(self) -> str:
        return "EphemeralEntry(<redacted>)"

    def wipe(self) -> None:
        for i in range(len(self.value)):
            self.value[i] = 0


class EphemeralStore:
    """Token → entry, in memory. Used from the event loop thread only."""

    def __init__(self, clock: Clock, *, max_entries: int = 1_000_000) -> None:
        self._clock = clock
        self._max_entries = max_entries
        self._entries: dict[str, EphemeralEntry] = {}

    def __repr__(self) -> str:
        return f"EphemeralStore({len(self._entries)} entries)"

    def __len__(self) -> int:
        return len(self._entries)

    def put(
        self,
        tenant: str,
        value: str,
        subject: str,
        metadata: dict[str, str],
        ttl: float,
        reveals: int,
    ) -> EphemeralEntry:
        if len(self._entries) >= self._max_entries:
            self.purge()
            if len(self._entries) >= self._max_entries:
                raise ResourceExhaustedError(
                    "too many CVCs held; reveal or let them expire", reason="CVC_CAPACITY"
                )
        now = self._clock.now()
        token = kinds.new_random_token()
        entry = EphemeralEntry(
            token, tenant, bytearray(value.encode()), subject, metadata, now, now + ttl, reveals
        )
        self._entries[token] = entry
        return entry

    def find(self, tenant: str, token: str) -> EphemeralEntry | None:
        """The live entry of this tenant for the token, if any (consumes nothing)."""
        entry = self._entries.get(token)
        if entry is None:
            return None
        if entry.expires_at <= self._clock.now():
            self._drop(entry)
            return None
        return entry if entry.tenant == tenant else None

    def take(self, entry: EphemeralEntry) -> str:
        """The value, spending one reveal; the last reveal removes the entry."""
        value = entry.value.decode()
        entry.reveals_left -= 1
        if entry.reveals_left <= 0:
            self._drop(entry)
        return value

    def give_back(self, entry: EphemeralEntry, value: str) -> None:
        """Undo a take() whose reveal did not happen (audit failed, batch refused)."""
        entry.reveals_left += 1
        if entry.token not in self._entries:
            entry.value[:] = value.encode()
            self._entries[entry.token] = entry

    def remove(self, tenant: str, token: str) -> bool:
        entry = self.find(tenant, token)
        if entry is None:
            return False
        self._drop(entry)
        return True

    def remove_subject(self, tenant: str, subject: str) -> int:
        """Drop every CVC of the tenant's subject (an erasure); returns how many."""
        gone = [e for e in self._entries.values() if e.tenant == tenant and e.subject == subject]
        for entry in gone:
            self._drop(entry)
        return len(gone)

    def purge(self) -> int:
        now = self._clock.now()
        dead = [e for e in self._entries.values() if e.expires_at <= now]
        for entry in dead:
            self._drop(entry)
        return len(dead)

    def _drop(self, entry: EphemeralEntry) -> None:
        self._entries.pop(entry.token, None)
        entry.wipe()
