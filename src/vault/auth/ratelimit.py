"""Rate limits, token buckets in this process.

Per caller, on reveals: a stolen credential can reveal at most `burst` values at once
and `rate` per second after that. Per caller, on tokenize: at most `burst` items at once
and `rate` per second (a batch of 100 spends 100), so nobody can tokenize the 10^5
candidates of a BIN+last4 PAN token quickly. Per peer, on refusals: a client that keeps being
refused is answered RESOURCE_EXHAUSTED before its credential is looked up in the store.
Buckets live in the process: with `--workers N` a caller or a peer gets up to N times
the rate (each worker refills its own bucket); the README says so.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from vault.auth.policy import Caller
from vault.clock import Clock
from vault.errors import ResourceExhaustedError

__all__ = [
    "DEFAULT_TOKENIZE_BURST",
    "DEFAULT_TOKENIZE_RATE",
    "PeerRefusalLimiter",
    "RateLimitedError",
    "RefusalsThrottledError",
    "RevealLimiter",
    "TokenizeBudgetError",
    "TokenizeLimiter",
]

DEFAULT_TOKENIZE_RATE = 100.0  # items per second a caller earns back
DEFAULT_TOKENIZE_BURST = 1000  # items at once: one full batch (max_batch)


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


class _CallerBuckets:
    """Token buckets by caller name; rate 0 means no limit. A bucket starts full, and
    again whenever the caller's rate or burst changes."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def spend(self, name: str, rate: float, burst: float, count: int) -> float | None:
        """Spend ``count`` or spend nothing and return the seconds until it would pass."""
        now = self._clock.now()
        bucket = self._buckets.get(name)
        if bucket is None or bucket.rate != rate or bucket.burst != burst:
            bucket = self._buckets[name] = _Bucket(burst, now, rate, burst)
        bucket.tokens = min(burst, bucket.tokens + (now - bucket.updated) * rate)
        bucket.updated = now
        if count > burst:
            # Never satisfiable in one call: the caller must send smaller batches.
            return count / rate
        if bucket.tokens < count:
            return (count - bucket.tokens) / rate
        bucket.tokens -= count
        return None

    def __len__(self) -> int:
        return len(self._buckets)


class RevealLimiter:
    """Reveal buckets by caller name; a caller with rate 0 is not limited."""

    def __init__(self, clock: Clock) -> None:
        self._buckets = _CallerBuckets(clock)

    def __repr__(self) -> str:
        return f"RevealLimiter({len(self._buckets)} callers)"

    def take(self, caller: Caller, count: int) -> None:
        """Spend ``count`` reveals or raise RateLimitedError (spending nothing)."""
        rate = caller.reveal_rate
        if rate <= 0:
            return
        burst = float(caller.reveal_burst or max(1.0, rate))
        wait = self._buckets.spend(caller.name, rate, burst, count)
        if wait is not None:
            raise RateLimitedError(retry_after=wait)


class TokenizeBudgetError(ResourceExhaustedError):
    """Over the caller's tokenize budget; ``retry_after`` seconds until the call would pass."""

    reason = "TOKENIZE_RATE_EXCEEDED"

    def __init__(self, retry_after: float, *, too_large: bool) -> None:
        super().__init__(
            "the batch is larger than the caller's tokenize burst; send smaller batches"
            if too_large
            else "the caller's tokenize budget is exceeded; retry later"
        )
        self.retry_after = retry_after


class TokenizeLimiter:
    """Tokenize buckets by caller name, counted in items. A caller's own tokenize_rate /
    tokenize_burst (set at `vaultctl callers add`) override the defaults; rate 0 = none."""

    def __init__(
        self,
        clock: Clock,
        rate: float = DEFAULT_TOKENIZE_RATE,
        burst: int = DEFAULT_TOKENIZE_BURST,
    ) -> None:
        self._buckets = _CallerBuckets(clock)
        self.rate = rate
        self.burst = burst

    def __repr__(self) -> str:
        return f"TokenizeLimiter({self.rate:g}/s, burst {self.burst}, {len(self._buckets)} callers)"

    def budget(self, caller: Caller) -> tuple[float, float]:
        """The caller's (rate, burst) in items; rate 0 = no budget."""
        rate = self.rate if caller.tokenize_rate is None else caller.tokenize_rate
        burst = self.burst if caller.tokenize_burst is None else caller.tokenize_burst
        return rate, float(burst or max(1.0, rate))

    def take(self, caller: Caller, count: int) -> None:
        """Spend ``count`` items or raise TokenizeBudgetError (spending nothing)."""
        rate, burst = self.budget(caller)
        if rate <= 0:
            return
        wait = self._buckets.spend(caller.name, rate, burst, count)
        if wait is not None:
            raise TokenizeBudgetError(wait, too_large=count > burst)


class RefusalsThrottledError(ResourceExhaustedError):
    """Too many refusals from this peer lately; ``retry_after`` seconds until one passes."""

    reason = "REFUSAL_RATE_EXCEEDED"

    def __init__(self, retry_after: float) -> None:
        super().__init__("too many refused calls from this peer; retry later")
        self.retry_after = retry_after


DEFAULT_REFUSAL_RATE = 10.0  # refusals per second a peer earns back
DEFAULT_REFUSAL_BURST = 100  # refusals a peer may have before it is throttled
_MAX_PEERS = 10_000  # buckets kept; the least recently refused peer is forgotten first


class PeerRefusalLimiter:
    """A token bucket per peer key (its address and the kind of credential it sent); every
    refusal spends one. A peer whose bucket is empty is *throttled*: the API layer then
    answers its calls RESOURCE_EXHAUSTED unless their credential is one the vault already
    knows, without any store work. At most ``max_peers`` buckets are kept (least recently
    refused evicted first), so the limiter's own memory is bounded; rate 0 turns it off.
    """

    def __init__(
        self,
        clock: Clock,
        rate: float = DEFAULT_REFUSAL_RATE,
        burst: int = DEFAULT_REFUSAL_BURST,
        max_peers: int = _MAX_PEERS,
    ) -> None:
        self._clock = clock
        self._rate = rate
        self._burst = float(max(burst, 1))
        self._max_peers = max_peers
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        # Peer -> clock time its bucket holds one refusal again. Non-empty only under
        # refusal pressure, so the hot path of an honest call is one truthiness check.
        self._throttled: dict[str, float] = {}

    def __repr__(self) -> str:
        return f"PeerRefusalLimiter({len(self._buckets)} peers, {len(self._throttled)} throttled)"

    @property
    def peers(self) -> int:
        return len(self._buckets)

    @property
    def throttling(self) -> bool:
        """Is any peer throttled (or was, until its next check)?"""
        return bool(self._throttled)

    def retry_after(self, peer: str) -> float | None:
        """Seconds until ``peer`` may be refused again, or None if it is not throttled."""
        until = self._throttled.get(peer)
        if until is None:
            return None
        wait = until - self._clock.now()
        if wait <= 0:
            del self._throttled[peer]
            return None
        return wait

    def spend(self, peer: str) -> None:
        """One refusal of ``peer``."""
        if self._rate <= 0:
            return
        now = self._clock.now()
        bucket = self._buckets.pop(peer, None)
        if bucket is None:
            bucket = _Bucket(self._burst, now, self._rate, self._burst)
            while len(self._buckets) >= self._max_peers:
                evicted, _ = self._buckets.popitem(last=False)
                self._throttled.pop(evicted, None)
        self._buckets[peer] = bucket  # most recently refused last
        bucket.tokens = min(self._burst, bucket.tokens + (now - bucket.updated) * self._rate)
        bucket.updated = now
        bucket.tokens = max(bucket.tokens - 1.0, 0.0)
        if bucket.tokens < 1.0:
            self._throttled[peer] = now + (1.0 - bucket.tokens) / self._rate
