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

This is audit.refusals' design (aggregation per key and window) applied to successful
volume; unlike a refusal, a quiet key's first call is not recorded at once (a checkout's
every first tokenize would otherwise be a row).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from vault.audit.base import OUTCOME_DENIED, OUTCOME_OK, AuditEvent, AuditSink
from vault.clock import Clock

__all__ = ["ACTION_TOKENIZE", "DEFAULT_WINDOW", "OVERFLOW_CALLER", "TokenizeVolume"]

log = logging.getLogger(__name__)

ACTION_TOKENIZE = "token.tokenize"  # Tokenize / BatchTokenize volume, per caller per window
DEFAULT_WINDOW = 60.0  # seconds of one caller's tokenizes summed into one record
OVERFLOW_CALLER = "(other callers)"  # the caller of volume counted once the table is full
BUDGET_REASON = "TOKENIZE_RATE_EXCEEDED"
_MAX_KEYS = 4096
_TICK_SECONDS = 1.0  # how often (real seconds, at most) ended windows are looked for


@dataclass(frozen=True, slots=True)
class _Key:
    caller: str
    tenant: str
    refused: bool  # items refused by the tokenize budget (else: tokenized)


@dataclass(slots=True)
class _Count:
    window_end: float  # clock time this key's window ends
    items: int = 0
    calls: int = 0
    first_seen: float = 0.0
    last_seen: float = 0.0


class TokenizeVolume:
    """Counts tokenize volume per caller and writes it to ``sink`` per window. ``sink``
    None (the in-process benchmark) counts nothing."""

    def __init__(
        self,
        sink: AuditSink | None,
        clock: Clock,
        window: float = DEFAULT_WINDOW,
        max_keys: int = _MAX_KEYS,
    ) -> None:
        self._sink = sink
        self._clock = clock
        self._window = window
        self._max_keys = max_keys
        self._counts: dict[_Key, _Count] = {}
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"TokenizeVolume({len(self._counts)} keys, window={self._window:g}s)"

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
        count = self._counts.get(key)
        if count is None:
            if len(self._counts) >= self._max_keys:
                key = _Key(OVERFLOW_CALLER, "", key.refused)
            count = self._counts.get(key)
            if count is None:
                count = self._counts[key] = _Count(now + self._window)
                self._start()
        if count.calls == 0:
            count.first_seen = now
        count.items += items
        count.calls += 1
        count.last_seen = now

    def _start(self) -> None:
        if self._task is None or self._task.done():
            with contextlib.suppress(RuntimeError):  # no running loop: flushed on close
                self._task = asyncio.get_running_loop().create_task(
                    self._tick(), name="tokenize-volume-audit"
                )

    async def _tick(self) -> None:
        while self._counts:
            await asyncio.sleep(min(self._window, _TICK_SECONDS))
            try:
                await self.flush()
            except Exception as exc:  # noqa: BLE001 - the task must keep running
                log.error("tokenize volume audit failed: %s", type(exc).__name__)

    async def flush(self, *, everything: bool = False) -> int:
        """Write one record per key whose window ended (every key: ``everything``);
        forget keys that counted nothing for a whole window. Returns records written. A
        failed write keeps the counts for the next flush."""
        if self._sink is None:
            return 0
        now = self._clock.now()
        due: list[tuple[_Key, _Count]] = []
        for key, count in list(self._counts.items()):
            if not everything and count.window_end > now:
                continue
            if count.calls == 0:
                del self._counts[key]
                continue
            due.append((key, count))
        if not due:
            return 0
        events = [_event(key, count) for key, count in due]
        taken = [(c.items, c.calls) for _, c in due]
        for _, count in due:
            count.items = count.calls = 0
            count.window_end = now + self._window
        try:
            await self._sink.record(events)
        except Exception as exc:  # noqa: BLE001 - counts kept for the next flush
            log.error("tokenize volume records failed: %s", type(exc).__name__)
            for (_, count), (items, calls) in zip(due, taken, strict=True):
                count.items += items
                count.calls += calls
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


def _event(key: _Key, count: _Count) -> AuditEvent:
    return AuditEvent(
        count.last_seen,
        key.caller,
        key.tenant,
        ACTION_TOKENIZE,
        outcome=OUTCOME_DENIED if key.refused else OUTCOME_OK,
        reason=BUDGET_REASON if key.refused else "",
        detail={
            "count": str(count.items),
            "calls": str(count.calls),
            "first_seen": f"{count.first_seen:.3f}",
            "last_seen": f"{count.last_seen:.3f}",
        },
    )
