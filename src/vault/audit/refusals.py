"""Refused calls in the audit trail at a cost the vault sets, not the caller.

Every refused credential or missing permission is recorded, but not one row per call: a
client sending N refusals would otherwise grow the append-only trail by N chained rows
and compete for the store's single writer. Refusals are tallied by key (peer address,
caller if known, action, reason, method, certificate identity). The first refusal of a
quiet key is recorded at once (count 1), so an isolated refusal is in the trail when the
call returns; the ones after it are counted and written as one record per key per
window (``detail.count``, ``first_seen``, ``last_seen``). A key with nothing counted for
a whole window is quiet again. A flood of N refusals from one key over T seconds writes
at most 2 + T / window rows, whatever N is.

Memory is bounded too: at most ``max_keys`` keys are tallied; past that, new peers are
folded into one key per (action, reason, method) with the peer ``OVERFLOW_PEER``. The
counting, windows and flush are audit.windows', shared with the tokenize volume.
"""

from __future__ import annotations

from dataclasses import dataclass

from vault.audit.base import OUTCOME_DENIED, AuditEvent, AuditSink
from vault.audit.windows import Tally, WindowedCounts
from vault.clock import Clock

__all__ = ["DEFAULT_WINDOW", "OVERFLOW_PEER", "RefusalKey", "RefusalLog"]

DEFAULT_WINDOW = 60.0  # seconds of refusals of one key summed into one record
OVERFLOW_PEER = "(other peers)"  # the peer of refusals tallied once the table is full
_MAX_KEYS = 4096


@dataclass(frozen=True, slots=True)
class RefusalKey:
    """What a tally is kept by: who was refused, for what, and how. No credential."""

    peer: str  # the peer's address without its port: a new connection is the same key
    caller: str  # the caller, for a permission refused to a known caller; else ""
    tenant: str
    action: str  # ACTION_AUTHENTICATE or ACTION_AUTHORIZE
    reason: str  # the refusal's UPPER_SNAKE reason code
    method: str  # the RPC method refused
    cert_identity: str = ""  # a verified client certificate's identity nobody is bound to

    def overflow(self) -> RefusalKey:
        return RefusalKey(OVERFLOW_PEER, "", "", self.action, self.reason, self.method)


def _event(key: RefusalKey, when: float, request_id: str, detail: dict[str, str]) -> AuditEvent:
    detail["method"] = key.method
    if key.cert_identity:
        detail["cert_identity"] = key.cert_identity
    return AuditEvent(
        when,
        key.caller,
        key.tenant,
        key.action,
        outcome=OUTCOME_DENIED,
        reason=key.reason,
        request_id=request_id,
        peer=key.peer,
        detail=detail,
    )


def _window_event(key: RefusalKey, t: Tally) -> AuditEvent:
    """The record of a key's refusals counted over a window."""
    detail = {
        "count": str(t.count),
        "first_seen": f"{t.first_seen:.3f}",
        "last_seen": f"{t.last_seen:.3f}",
    }
    return _event(key, t.last_seen, t.request_id, detail)


class RefusalLog(WindowedCounts[RefusalKey]):
    """Tallies refusals and writes them to their audit sink, one record per key per
    window. ``close`` (on stop) writes whatever is still counted."""

    def __init__(
        self, clock: Clock, window: float = DEFAULT_WINDOW, max_keys: int = _MAX_KEYS
    ) -> None:
        super().__init__(clock, window, max_keys, _window_event, "RefusalLog")

    async def refused(self, sink: AuditSink, key: RefusalKey, request_id: str) -> None:
        """Count one refusal; record it at once if its key was quiet. Raises if that
        immediate record cannot be written (the caller logs it; the call is refused
        either way); it is then counted for the next flush."""
        now = self._clock.now()
        key, tally, quiet = self.tally(key, sink, RefusalKey.overflow, now)
        if not quiet:
            tally.add(now, request_id=request_id)
            return
        try:
            await sink.record([_event(key, now, request_id, {"count": "1"})])
        except Exception:
            # Counted instead, for the next flush: a refusal is never lost silently.
            tally.add(now, request_id=request_id)
            raise
