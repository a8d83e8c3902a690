"""RefusalLog: the first refusal of a key at once, the rest one record per window, bounded
keys, counts kept when the sink fails; PeerRefusalLimiter: burst, refill, bounded map."""

from __future__ import annotations

import pytest

from vault.audit.base import ACTION_AUTHENTICATE, AuditEvent
from vault.audit.refusals import OVERFLOW_PEER, RefusalKey, RefusalLog
from vault.auth.ratelimit import PeerRefusalLimiter
from vault.clock import ManualClock


class Recorder:
    def __init__(self) -> None:
        self.events: list[AuditEvent] = []
        self.fail = False

    async def record(self, events) -> None:
        if self.fail:
            raise OSError("down")
        self.events.extend(events)


def key(peer: str = "ipv4:10.0.0.1", reason: str = "NO_CREDENTIAL") -> RefusalKey:
    return RefusalKey(peer, "", "", ACTION_AUTHENTICATE, reason, "Tokenize")


def counts(sink: Recorder) -> list[tuple[str, str, str]]:
    return [(e.peer, e.reason, e.detail["count"]) for e in sink.events]


async def test_first_at_once_then_one_record_per_window():
    clock, sink = ManualClock(), Recorder()
    log = RefusalLog(clock, window=10)
    for _ in range(1000):
        await log.refused(sink, key(), "r")
    assert counts(sink) == [("ipv4:10.0.0.1", "NO_CREDENTIAL", "1")]
    assert await log.flush() == 0  # the window is still open
    clock.advance(10)
    assert await log.flush() == 1
    assert counts(sink)[1:] == [("ipv4:10.0.0.1", "NO_CREDENTIAL", "999")]
    assert sink.events[1].detail["method"] == "Tokenize"
    # A window with nothing counted makes the key quiet: the next refusal is at once.
    clock.advance(10)
    assert await log.flush() == 0
    assert log.keys == 0
    await log.refused(sink, key(), "r")
    assert counts(sink)[2:] == [("ipv4:10.0.0.1", "NO_CREDENTIAL", "1")]
    await log.close()


async def test_keys_are_bounded_and_the_rest_share_an_overflow_key():
    clock, sink = ManualClock(), Recorder()
    log = RefusalLog(clock, window=10, max_keys=3)
    for i in range(50):
        await log.refused(sink, key(f"ipv4:10.0.0.{i}"), "r")
    assert log.keys == 4  # three peers and the overflow key
    await log.close()
    peers = [e.peer for e in sink.events]
    assert peers[:4] == ["ipv4:10.0.0.0", "ipv4:10.0.0.1", "ipv4:10.0.0.2", OVERFLOW_PEER]
    assert sum(int(e.detail["count"]) for e in sink.events) == 50


async def test_a_failing_sink_keeps_the_counts_for_the_next_flush():
    clock, sink = ManualClock(), Recorder()
    log = RefusalLog(clock, window=10)
    for _ in range(5):
        await log.refused(sink, key(), "r")
    sink.fail = True
    clock.advance(10)
    assert await log.flush() == 0
    sink.fail = False
    assert await log.flush(everything=True) == 1
    assert counts(sink) == [
        ("ipv4:10.0.0.1", "NO_CREDENTIAL", "1"),
        ("ipv4:10.0.0.1", "NO_CREDENTIAL", "4"),
    ]


async def test_an_immediate_record_that_fails_raises_and_is_counted_for_later():
    clock, sink = ManualClock(), Recorder()
    sink.fail = True
    log = RefusalLog(clock, window=10)
    with pytest.raises(OSError, match="down"):
        await log.refused(sink, key(), "r")
    sink.fail = False
    await log.close()
    assert counts(sink) == [("ipv4:10.0.0.1", "NO_CREDENTIAL", "1")]


def test_a_peer_is_throttled_after_its_burst_and_refills_at_its_rate():
    clock = ManualClock()
    limiter = PeerRefusalLimiter(clock, rate=2.0, burst=3)
    assert not limiter.throttling
    for _ in range(2):
        limiter.spend("a")
    assert limiter.retry_after("a") is None
    limiter.spend("a")
    assert limiter.retry_after("a") == pytest.approx(0.5)
    assert limiter.retry_after("b") is None  # other peers are not affected
    clock.advance(0.5)
    assert limiter.retry_after("a") is None
    assert not limiter.throttling


def test_the_limiter_forgets_the_least_recently_refused_peer_first():
    clock = ManualClock()
    limiter = PeerRefusalLimiter(clock, rate=1.0, burst=1, max_peers=100)
    for i in range(10_000):
        limiter.spend(f"peer-{i}")
    assert limiter.peers == 100
    assert limiter.retry_after("peer-0") is None  # evicted with its bucket
    assert limiter.retry_after("peer-9999") is not None


def test_rate_zero_turns_throttling_off():
    limiter = PeerRefusalLimiter(ManualClock(), rate=0.0, burst=1)
    for _ in range(100):
        limiter.spend("a")
    assert not limiter.throttling
    assert limiter.peers == 0
