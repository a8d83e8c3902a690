"""Counts written to the audit trail one record per key per window, not one per event.

The shape shared by refused calls (audit.refusals) and tokenize volume (audit.volume):
events are counted per key in memory (a dictionary update, no await, so the hot path
pays nothing); a background task wakes at most every second and, for each key whose
window ended, writes one record of what it counted; a key that counted nothing for a
whole window is forgotten; ``close`` (on stop) writes everything still counted. A write
that fails keeps its counts for the next flush: nothing counted is lost silently. At
most ``max_keys`` keys are held; past that, the caller folds new keys into an overflow
key (``tally(..., overflow=...)``), so memory stays bounded whatever the traffic.

What each use counts by, and what its record says, is its own (the ``event`` function);
the counting, the windows and the flush are written once here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from vault.audit.base import AuditEvent, AuditSink
from vault.clock import Clock

__all__ = ["Tally", "WindowedCounts"]

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)

# How often (real seconds, at most) the background task looks for windows that ended.
_TICK_SECONDS = 1.0


@dataclass(slots=True)
class Tally:
    """What one key counted since its last record."""

    sink: AuditSink  # where this key's records go
    window_end: float  # clock time this key's counting window ends
    count: int = 0  # items counted (one per refusal; values per tokenize call)
    calls: int = 0  # calls counted
    first_seen: float = 0.0
    last_seen: float = 0.0
    request_id: str = ""  # the first counted call's request id

    def add(self, now: float, items: int = 1, request_id: str = "") -> None:
        """Count one call of ``items``."""
        if self.calls == 0:
            self.first_seen, self.request_id = now, request_id
        self.count += items
        self.calls += 1
        self.last_seen = max(self.last_seen, now)


class WindowedCounts(Generic[K]):
    """Tallies per key, flushed to each tally's sink as ``event(key, tally)`` records
    once the key's window ends. ``name`` names the background task and the log lines."""

    def __init__(
        self,
        clock: Clock,
        window: float,
        max_keys: int,
        event: Callable[[K, Tally], AuditEvent],
        name: str,
    ) -> None:
        self._clock = clock
        self._window = window
        self._max_keys = max_keys
        self._event = event
        self._name = name
        self._tallies: dict[K, Tally] = {}
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"{self._name}({len(self._tallies)} keys, window={self._window:g}s)"

    @property
    def keys(self) -> int:
        """Keys tallied now (bounded by max_keys plus the overflow keys)."""
        return len(self._tallies)

    def tally(
        self, key: K, sink: AuditSink, overflow: Callable[[K], K], now: float
    ) -> tuple[K, Tally, bool]:
        """The tally of ``key`` (of its overflow key once the table is full), created if
        new, with ``sink`` as its sink from now on; and whether it was created."""
        if key not in self._tallies and len(self._tallies) >= self._max_keys:
            key = overflow(key)
        tally = self._tallies.get(key)
        if tally is not None:
            tally.sink = sink
            return key, tally, False
        tally = self._tallies[key] = Tally(sink, now + self._window)
        self._start()
        return key, tally, True

    def _start(self) -> None:
        if self._task is None or self._task.done():
            with contextlib.suppress(RuntimeError):  # no running loop: flushed on close
                self._task = asyncio.get_running_loop().create_task(
                    self._tick(), name=f"{self._name}-audit"
                )

    async def _tick(self) -> None:
        while self._tallies:
            await asyncio.sleep(min(self._window, _TICK_SECONDS))
            try:
                await self.flush()
            except Exception as exc:  # noqa: BLE001 - the task must keep running
                log.error("%s audit flush failed: %s", self._name, type(exc).__name__)

    async def flush(self, *, everything: bool = False) -> int:
        """Write one record per key whose window ended (every key: ``everything``);
        forget keys that counted nothing for a whole window. Returns records written.
        A sink that fails keeps its counts for the next flush."""
        now = self._clock.now()
        due: dict[int, tuple[AuditSink, list[tuple[K, Tally]]]] = {}
        for key, tally in list(self._tallies.items()):
            if not everything and tally.window_end > now:
                continue
            if tally.calls == 0:
                del self._tallies[key]
                continue
            due.setdefault(id(tally.sink), (tally.sink, []))[1].append((key, tally))
        written = 0
        for sink, entries in due.values():
            written += await self._write(sink, entries, now)
        return written

    async def _write(self, sink: AuditSink, entries: Sequence[tuple[K, Tally]], now: float) -> int:
        events = [self._event(key, t) for key, t in entries]
        taken = [(t.count, t.calls) for _, t in entries]
        for _, t in entries:
            t.count = t.calls = 0
            t.window_end = now + self._window
        try:
            await sink.record(events)
        except Exception as exc:  # noqa: BLE001 - counts kept for the next flush
            log.error("%s audit records failed: %s", self._name, type(exc).__name__)
            for (_, t), (count, calls) in zip(entries, taken, strict=True):
                t.count += count
                t.calls += calls
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
