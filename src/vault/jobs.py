"""Background jobs that must run in one vault process at a time (TTL purge now; rewrap
and auto-rotation later), however many replicas share the store.

Each run first takes (or renews) the job's lease in the store; only the holder runs the
job. The holder renews it every run, so it keeps the job while it lives; a replica that
dies stops renewing, and another takes the job over once the lease has expired.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable

from vault import metrics
from vault.clock import Clock
from vault.storage.base import Store

__all__ = ["LeasedJob", "lease_seconds"]

log = logging.getLogger(__name__)

# A lease outlives this many missed runs of its holder before another process takes over.
_MISSED_RUNS = 3


def lease_seconds(interval: float) -> float:
    """How long a lease taken by a job run every ``interval`` seconds lasts."""
    return max(_MISSED_RUNS * interval, 1.0)


class LeasedJob:
    """``await job()`` runs ``run`` if this process holds (or now takes) the lease."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        name: str,
        interval: float,
        run: Callable[[], Awaitable[None]],
        *,
        holder: str | None = None,
    ) -> None:
        self.name = name
        # Random per process: a restarted process is a new holder and waits its turn.
        self.holder = holder or secrets.token_hex(8)
        self._store = store
        self._clock = clock
        self._lease = lease_seconds(interval)
        self._run = run
        self.held = False

    def __repr__(self) -> str:
        return f"LeasedJob({self.name!r}, held={self.held})"

    async def __call__(self) -> bool:
        """One run; True if this process held the lease and ran the job."""
        now = self._clock.now()
        held = await self._store.take_job_lease(self.name, self.holder, now, now + self._lease)
        if held != self.held:
            log.info("%s lease %s", self.name, "taken" if held else "held elsewhere")
        self.held = held
        metrics.JOB_LEASE_HELD.labels(self.name).set(1 if held else 0)
        if held:
            await self._run()
        return held

    async def release(self) -> None:
        """Hand the job to another process now (on a clean stop), not after expiry."""
        if self.held:
            await self._store.release_job_lease(self.name, self.holder)
            self.held = False
            metrics.JOB_LEASE_HELD.labels(self.name).set(0)
