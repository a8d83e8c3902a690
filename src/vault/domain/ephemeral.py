"""Card security codes, held in this process's memory only.

A CVC may be kept until the authorisation that needs it, never after (PCI DSS 3.3.1):
it is never written to the store, the WAL, the audit trail or a log. An entry lives
for a short TTL and a small number of reveals, then its bytes are overwritten and it
is gone. A restart forgets every CVC, by design.

Memory is bounded in bytes, not entries: every entry is charged what it costs (a fixed
overhead measured with tracemalloc, plus its subject and metadata), the whole store has
a byte budget, and each tenant may use at most a share of it, so one tenant filling its
share neither OOM-kills the pod nor locks the other tenants out. Expired entries leave
from the front of a heap ordered by expiry: amortised O(1) per entry, never a scan.

Python cannot promise that no copy of a string survives in freed memory; the value is
kept in a bytearray that is zeroed when the entry goes, the server turns core dumps
off, and the README says to run without swap (or with encrypted swap).
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from vault.clock import Clock
from vault.domain import kinds
from vault.errors import FieldViolation, InvalidArgumentError, ResourceExhaustedError

__all__ = [
    "CVC_MAX_METADATA_CHARS",
    "CVC_MAX_METADATA_ENTRIES",
    "DEFAULT_BUDGET_BYTES",
    "DEFAULT_TENANT_SHARE",
    "ENTRY_OVERHEAD_BYTES",
    "RETRY_AFTER_SECONDS",
    "EphemeralEntry",
    "EphemeralStore",
    "cvc_metadata_violations",
]

DEFAULT_BUDGET_BYTES = 64 * 1024 * 1024
DEFAULT_TENANT_SHARE = 0.5
# What one entry costs beyond its strings: the entry object, its token, the value's
# bytearray, the dict slot and the heap item. 460 bytes measured (tracemalloc, CPython
# 3.11, 10,000 entries); rounded up so the budget errs on the safe side.
ENTRY_OVERHEAD_BYTES = 512
# A CVC's metadata only ties it to the authorisation it is for (an order id), so a small
# bound: 4 entries of at most 64 characters each (keys and values), charged to the budget.
# The general limit (32 x 512 characters, for an hour) let one entry cost ~8 KB.
CVC_MAX_METADATA_ENTRIES = 4
CVC_MAX_METADATA_CHARS = 64
_METADATA_ENTRY_OVERHEAD = 128  # two str objects and a dict slot
# Compact the heap once it holds this many more items than live entries (entries
# revealed or removed before they expire leave their heap item behind).
_HEAP_SLACK = 1024
_NO_METADATA: Mapping[str, str] = {}
# The RetryInfo of a refusal: a fixed hint. The soonest expiry would be a better one, but
# it may be another tenant's CVC, and would tell this tenant when that one's expire.
RETRY_AFTER_SECONDS = 1.0


def cvc_metadata_violations(metadata: Mapping[str, str]) -> list[FieldViolation]:
    """The metadata a CVC may carry: few and short entries (see the bound above)."""
    if len(metadata) > CVC_MAX_METADATA_ENTRIES or any(
        len(k) > CVC_MAX_METADATA_CHARS or len(v) > CVC_MAX_METADATA_CHARS
        for k, v in metadata.items()
    ):
        return [
            FieldViolation(
                "metadata",
                f"at most {CVC_MAX_METADATA_ENTRIES} entries of at most "
                f"{CVC_MAX_METADATA_CHARS} characters for DATA_KIND_CVC",
            )
        ]
    return []


def _cost(subject: str, metadata: Mapping[str, str]) -> int:
    extra = sum(
        len(k.encode()) + len(v.encode()) + _METADATA_ENTRY_OVERHEAD for k, v in metadata.items()
    )
    return ENTRY_OVERHEAD_BYTES + len(subject.encode()) + extra


@dataclass(slots=True)
class EphemeralEntry:
    token: str
    tenant: str
    value: bytearray  # the CVC digits; zeroed when the entry goes
    subject: str
    metadata: Mapping[str, str]
    created_at: float
    expires_at: float
    reveals_left: int
    cost: int = 0  # bytes charged to the tenant's share while the entry is held
    seq: int = 0  # which heap item is this entry's (older ones are stale)

    def __repr__(self) -> str:
        return "EphemeralEntry(<redacted>)"

    def wipe(self) -> None:
        for i in range(len(self.value)):
            self.value[i] = 0


class EphemeralStore:
    """Token → entry, in memory, within a byte budget shared out per tenant. Used from
    the event loop thread only."""

    def __init__(
        self,
        clock: Clock,
        *,
        budget_bytes: int = DEFAULT_BUDGET_BYTES,
        tenant_share: float = DEFAULT_TENANT_SHARE,
    ) -> None:
        if budget_bytes < ENTRY_OVERHEAD_BYTES or not 0 < tenant_share <= 1:
            msg = "the CVC budget must hold one entry and the tenant share be in (0, 1]"
            raise ValueError(msg)
        self._clock = clock
        self._budget = budget_bytes
        self._tenant_budget = int(budget_bytes * tenant_share)
        self._entries: dict[str, EphemeralEntry] = {}
        self._used = 0
        self._used_by_tenant: dict[str, int] = {}
        # (expires_at, seq, entry); an item is live only while entry.seq == seq and the
        # entry is held, so len(heap) - len(entries) is the number of stale items.
        self._expiry: list[tuple[float, int, EphemeralEntry]] = []
        self._seq = 0

    def __repr__(self) -> str:
        return f"EphemeralStore({len(self._entries)} entries)"

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def used_bytes(self) -> int:
        return self._used

    def tenant_used_bytes(self, tenant: str) -> int:
        return self._used_by_tenant.get(tenant, 0)

    def put(
        self,
        tenant: str,
        value: str,
        subject: str,
        metadata: Mapping[str, str],
        ttl: float,
        reveals: int,
    ) -> EphemeralEntry:
        if violations := cvc_metadata_violations(metadata):
            raise InvalidArgumentError(violations)
        cost = _cost(subject, metadata)
        self._require(tenant, cost)
        now = self._clock.now()
        entry = EphemeralEntry(
            kinds.new_random_token(),
            tenant,
            bytearray(value.encode()),
            subject,
            dict(metadata) if metadata else _NO_METADATA,
            now,
            now + ttl,
            reveals,
            cost,
        )
        self._hold(entry)
        return entry

    def check_room(self, tenant: str, entries: Sequence[tuple[str, Mapping[str, str]]]) -> None:
        """Refuse now (RESOURCE_EXHAUSTED) if the tenant's share cannot hold all of these
        (subject, metadata) entries: a batch checks before anything of it is written."""
        if entries:
            self._require(tenant, sum(_cost(subject, md) for subject, md in entries))

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
        """Undo a take() whose reveal did not happen (audit failed, batch refused). The
        entry is held again even past the budget: it was within it a moment ago."""
        entry.reveals_left += 1
        if entry.token not in self._entries:
            entry.value[:] = value.encode()
            self._hold(entry)

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
        """Drop the expired entries, from the front of the expiry heap; returns how many."""
        now = self._clock.now()
        heap, dropped = self._expiry, 0
        while heap and heap[0][0] <= now:
            _, seq, entry = heapq.heappop(heap)
            if entry.seq == seq and self._entries.get(entry.token) is entry:
                self._drop(entry)
                dropped += 1
        return dropped

    def _require(self, tenant: str, cost: int) -> None:
        self.purge()
        tenant_used = self._used_by_tenant.get(tenant, 0)
        if tenant_used + cost > self._tenant_budget or self._used + cost > self._budget:
            exc = ResourceExhaustedError(
                "the memory held for CVCs is full; reveal or let them expire",
                reason="CVC_BUDGET_EXHAUSTED",
            )
            exc.retry_after = RETRY_AFTER_SECONDS
            raise exc

    def _hold(self, entry: EphemeralEntry) -> None:
        self._seq += 1
        entry.seq = self._seq
        self._entries[entry.token] = entry
        self._used += entry.cost
        self._used_by_tenant[entry.tenant] = self._used_by_tenant.get(entry.tenant, 0) + entry.cost
        heapq.heappush(self._expiry, (entry.expires_at, entry.seq, entry))
        if len(self._expiry) > 2 * len(self._entries) + _HEAP_SLACK:
            # Amortised O(1): at least half the items are stale, dropped in one pass.
            self._expiry = [(e.expires_at, e.seq, e) for e in self._entries.values()]
            heapq.heapify(self._expiry)

    def _drop(self, entry: EphemeralEntry) -> None:
        if self._entries.pop(entry.token, None) is entry:
            self._used -= entry.cost
            left = self._used_by_tenant[entry.tenant] - entry.cost
            if left:
                self._used_by_tenant[entry.tenant] = left
            else:
                del self._used_by_tenant[entry.tenant]
        entry.wipe()
