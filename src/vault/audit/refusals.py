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
folded into one key per (action, reason, method) with the peer ``OVERFLOW_PEER``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from vault.audit.base import OUTCOME_DENIED, AuditEvent, AuditSink
from vault.clock import Clock

__all__ = ["DEFAULT_WINDOW", "OVERFLOW_PEER", "RefusalKey", "RefusalLog"]

log = logging.getLogger(__name__)

DEFAULT_WINDOW = 60.0  # seconds of refusals of one key summed into one record
OVERFLOW_PEER = "(other peers)"  # the peer of refusals tallied once the table is full
_MAX_KEYS = 4096
# How often (real seconds, at most) the background task looks for windows that ended.
_TICK_SECONDS = 1.0


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


@dataclass(slots=True)
class _Tally:
    sink: AuditSink  # where this key's records go (the trail, or the sealed buffer)
    window_end: float  # clock time this key's counting window ends
    count: int = 0  # refusals counted since the last record
    first_seen: float = 0.0
    last_seen: float = 0.0
    request_id: str = ""  # the first counted call's request id


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


class RefusalLog:
    """Tallies refusals and writes them to their audit sink, one record per key per
    window. ``close`` (on stop) writes whatever is still counted."""

    def __init__(
        self, clock: Clock, window: float = DEFAULT_WINDOW, max_keys: int = _MAX_KEYS
    ) -> None:
        self._clock = clock
        self._window = window
        self._max_keys = max_keys
        self._tallies: dict[RefusalKey, _Tally] = {}
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"RefusalLog({len(self._tallies)} keys, window={self._window:g}s)"

    @property
    def keys(self) -> int:
        """Keys tallied now (bounded by max_keys plus the overflow keys)."""
        return len(self._tallies)

    async def refused(self, sink: AuditSink, key: RefusalKey, request_id: str) -> None:
        """Count one refusal; record it at once if its key was quiet. Raises if that
        immediate record cannot be written (the caller logs it; the call is refused
        either way); it is then counted for the next flush."""
        now = self._clock.now()
        if key not in self._tallies and len(self._tallies) >= self._max_keys:
            key = key.overflow()
        tally = self._tallies.get(key)
        if tally is not None:
            tally.sink = sink
            if tally.count == 0:
                tally.first_seen, tally.request_id = now, request_id
            tally.count += 1
            tally.last_seen = now
            return
        tally = self._tallies[key] = _Tally(sink, now + self._window)
        self._start()
        try:
            await sink.record([_event(key, now, request_id, {"count": "1"})])
        except Exception:
            # Counted instead, for the next flush: a refusal is never lost silently.
            if tally.count == 0:
                tally.first_seen, tally.request_id = now, request_id
            tally.count += 1
            tally.last_seen = max(tally.last_seen, now)
            raise

    def _start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._tick(), name="refusal-audit")

    async def _tick(self) -> None:
        while self._tallies:
            await asyncio.sleep(min(self._window, _TICK_SECONDS))
            try:
                await self.flush()
            except Exception as exc:  # noqa: BLE001 - the task must keep running
                log.error("refusal audit flush failed: %s", type(exc).__name__)

    async def flush(self, *, everything: bool = False) -> int:
        """Write one record per key whose window ended (every key: ``everything``);
        forget keys that counted nothing for a whole window. Returns records written.
        A sink that fails keeps its counts for the next flush."""
        now = self._clock.now()
        due: dict[int, tuple[AuditSink, list[tuple[RefusalKey, _Tally]]]] = {}
        for key, tally in list(self._tallies.items()):
            if not everything and tally.window_end > now:
                continue
            if tally.count == 0:
                del self._tallies[key]
                continue
            due.setdefault(id(tally.sink), (tally.sink, []))[1].append((key, tally))
        written = 0
        for sink, entries in due.values():
            written += await self._write(sink, entries, now)
        return written

    async def _write(
        self, sink: AuditSink, entries: Sequence[tuple[RefusalKey, _Tally]], now: float
    ) -> int:
        events = [
            _event(
                key,
                t.last_seen,
                t.request_id,
                {
                    "count": str(t.count),
                    "first_seen": f"{t.first_seen:.3f}",
                    "last_seen": f"{t.last_seen:.3f}",
                },
            )
            for key, t in entries
        ]
        counts = [t.count for _, t in entries]
        for _, t in entries:
            t.count = 0
            t.window_end = now + self._window
        try:
            await sink.record(events)
        except Exception as exc:  # noqa: BLE001 - counts kept for the next flush
            log.error("refusal audit records failed: %s", type(exc).__name__)
            for (_, t), count in zip(entries, counts, strict=True):
                t.count += count
            return 0
        return len(events)

    async def close(self) -> None:
        """Stop the background task and write every count still held."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.flush(everything=True)
