"""Per-caller reveal rate limits: a token bucket per caller, in this process.

A stolen credential can reveal at most `burst` values at once and `rate` per second
after that. Buckets live in the process: with `--workers N` a caller gets up to N times
the rate (each worker refills its own bucket); the README says so.
"""

from __future__ import annotations

from dataclasses import dataclass

from vault.auth.policy import Caller
from vault.clock import Clock
from vault.errors import ResourceExhaustedError

__all__ = ["RateLimitedError", "RevealLimiter"]


class RateLimitedError(ResourceExhaustedError):
    """Over the caller's reveal rate; ``retry_after`` seconds until the call would pass."""

    reason = "REVEAL_RATE_EXCEEDED"

    def __init__(self, retry_after: float) -> None:
        super().__init__("the caller's reveal rate limit is exceeded; retry later")
        self.retry_after = retry_after


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float
    rate: float
    burst: float


class RevealLimiter:
    """Token buckets by caller name; a caller with rate 0 is not limited."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def __repr__(self) -> str:
        return f"RevealLimiter({len(self._buckets)} callers)"

    def take(self, caller: Caller, count: int) -> None:
        """Spend ``count`` reveals or raise RateLimitedError (spending nothing)."""
        rate = caller.reveal_rate
        if rate <= 0:
            return
        burst = float(caller.reveal_burst or max(1.0, rate))
        now = self._clock.now()
        bucket = self._buckets.get(caller.name)
        if bucket is None or bucket.rate != rate or bucket.burst != burst:
            # New caller, or its policy changed: start from a full bucket.
            bucket = self._buckets[caller.name] = _Bucket(burst, now, rate, burst)
        bucket.tokens = min(burst, bucket.tokens + (now - bucket.updated) * rate)
        bucket.updated = now
        if count > burst:
            # Never satisfiable in one call: the caller must send smaller batches.
            raise RateLimitedError(retry_after=count / rate)
        if bucket.tokens < count:
            raise RateLimitedError(retry_after=(count - bucket.tokens) / rate)
        bucket.tokens -= count
