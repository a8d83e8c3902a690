"""Tokenize volume in the audit trail, one record per caller per window, not per call.

A tokenize reveals nothing, so it writes no record of its own; but a caller harvesting
(tokenizing the candidates of a BIN+last4 PAN token, say) must be visible in the trail.
Every tokenize call is counted by (caller, tenant, outcome): items and calls that passed
(outcome ``ok``), and items and calls refused by the tokenize budget (outcome ``denied``,
reason ``TOKENIZE_RATE_EXCEEDED``). Each key with something counted is written as one
record (action ``token.tokenize``, ``detail``: count, calls, first_seen, last_seen) once
its window ends, and on stop. Counting is a dictionary update with no await, so the hot
path pays nothing for it; N calls over T seconds write at most keys x (1 + T / window)
records. At most ``max_keys`` keys are counted; past that, new callers share one key
(caller ``(other callers)``), so memory stays bounded.

This is audit.refusals' design (aggregation per key and window, audit.windows) applied
to successful volume; unlike a refusal, a quiet key's first call is not recorded at once
(a checkout's every first tokenize would otherwise be a row).
"""

from __future__ import annotations

from dataclasses import dataclass

from vault.audit.base import OUTCOME_DENIED, OUTCOME_OK, AuditEvent, AuditSink
from vault.audit.windows import Tally, WindowedCounts
from vault.clock import Clock

__all__ = ["ACTION_TOKENIZE", "DEFAULT_WINDOW", "OVERFLOW_CALLER", "TokenizeVolume"]

ACTION_TOKENIZE = "token.tokenize"  # Tokenize / BatchTokenize volume, per caller per window
DEFAULT_WINDOW = 60.0  # seconds of one caller's tokenizes summed into one record
OVERFLOW_CALLER = "(other callers)"  # the caller of volume counted once the table is full
BUDGET_REASON = "TOKENIZE_RATE_EXCEEDED"
_MAX_KEYS = 4096


@dataclass(frozen=True, slots=True)
class _Key:
    caller: str
    tenant: str
    refused: bool  # items refused by the tokenize budget (else: tokenized)

    def overflow(self) -> _Key:
        return _Key(OVERFLOW_CALLER, "", self.refused)


class TokenizeVolume(WindowedCounts[_Key]):
    """Counts tokenize volume per caller and writes it to ``sink`` per window. ``sink``
    None (the in-process benchmark) counts nothing."""

    def __init__(
        self,
        sink: AuditSink | None,
        clock: Clock,
        window: float = DEFAULT_WINDOW,
        max_keys: int = _MAX_KEYS,
    ) -> None:
        super().__init__(clock, window, max_keys, _event, "TokenizeVolume")
        self._sink = sink

    def tokenized(self, caller: str, tenant: str, items: int) -> None:
        """``items`` values of one call were tokenized."""
        self._count(_Key(caller, tenant, refused=False), items)

    def refused(self, caller: str, tenant: str, items: int) -> None:
        """A call of ``items`` values was refused by the caller's tokenize budget."""
        self._count(_Key(caller, tenant, refused=True), items)

    def _count(self, key: _Key, items: int) -> None:
        if self._sink is None:
            return
        now = self._clock.now()
        self.tally(key, self._sink, _Key.overflow, now)[1].add(now, items)


def _event(key: _Key, count: Tally) -> AuditEvent:
    return AuditEvent(
        count.last_seen,
        key.caller,
        key.tenant,
        ACTION_TOKENIZE,
        outcome=OUTCOME_DENIED if key.refused else OUTCOME_OK,
        reason=BUDGET_REASON if key.refused else "",
        detail={
            "count": str(count.count),
            "calls": str(count.calls),
            "first_seen": f"{count.first_seen:.3f}",
            "last_seen": f"{count.last_seen:.3f}",
        },
    )
