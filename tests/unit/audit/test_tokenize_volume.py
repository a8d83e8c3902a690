"""TokenizeVolume: one record per caller and outcome per window, nothing per call, bounded
keys, counts kept when the sink fails; TokenizeLimiter: per-item budget, overrides, burst."""

from __future__ import annotations

import pytest

from vault.audit.base import AuditEvent
from vault.audit.volume import ACTION_TOKENIZE, OVERFLOW_CALLER, TokenizeVolume
from vault.auth.policy import Caller
from vault.auth.ratelimit import TokenizeBudgetError, TokenizeLimiter
from vault.clock import ManualClock


class Recorder:
    def __init__(self) -> None:
        self.events: list[AuditEvent] = []
        self.fail = False

    async def record(self, events) -> None:
        if self.fail:
            raise OSError("down")
        self.events.extend(events)


def summary(sink: Recorder) -> list[tuple[str, str, str, str, str]]:
    return [
        (e.caller, e.outcome, e.reason, e.detail["count"], e.detail["calls"]) for e in sink.events
    ]


async def test_calls_are_summed_per_caller_and_window():
    clock, sink = ManualClock(), Recorder()
    volume = TokenizeVolume(sink, clock, window=60.0)
    for _ in range(5):
        volume.tokenized("checkout", "shop1", 100)
    volume.refused("checkout", "shop1", 100)
    volume.tokenized("other", "shop2", 1)
    assert await volume.flush() == 0  # the window has not ended: nothing per call
    clock.advance(61)
    assert await volume.flush() == 3
    assert summary(sink) == [
        ("checkout", "ok", "", "500", "5"),
        ("checkout", "denied", "TOKENIZE_RATE_EXCEEDED", "100", "1"),
        ("other", "ok", "", "1", "1"),
    ]
    assert {e.action for e in sink.events} == {ACTION_TOKENIZE}
    assert sink.events[1].tenant == "shop1"
    # A quiet window writes nothing and forgets the key.
    clock.advance(61)
    assert await volume.flush() == 0
    await volume.close()
    assert len(sink.events) == 3


async def test_close_writes_what_is_counted_and_a_failed_write_keeps_it():
    clock, sink = ManualClock(), Recorder()
    volume = TokenizeVolume(sink, clock, window=60.0)
    volume.tokenized("checkout", "shop1", 7)
    sink.fail = True
    assert await volume.flush(everything=True) == 0
    sink.fail = False
    volume.tokenized("checkout", "shop1", 3)
    await volume.close()
    assert summary(sink) == [("checkout", "ok", "", "10", "2")]


async def test_keys_are_bounded():
    clock, sink = ManualClock(), Recorder()
    volume = TokenizeVolume(sink, clock, window=60.0, max_keys=2)
    for name in ("a", "b", "c", "d"):
        volume.tokenized(name, "t", 1)
    await volume.close()
    assert [(e.caller, e.detail["count"]) for e in sink.events] == [
        ("a", "1"),
        ("b", "1"),
        (OVERFLOW_CALLER, "2"),
    ]


async def test_no_sink_counts_nothing():
    volume = TokenizeVolume(None, ManualClock())
    volume.tokenized("bench", "t", 1000)
    assert await volume.flush(everything=True) == 0


def test_the_budget_is_counted_in_items_with_per_caller_overrides():
    clock = ManualClock()
    limiter = TokenizeLimiter(clock, rate=10.0, burst=100)
    default = Caller("checkout", "t", frozenset({"tokenize"}))
    limiter.take(default, 60)
    limiter.take(default, 40)
    with pytest.raises(TokenizeBudgetError) as refused:
        limiter.take(default, 5)
    assert refused.value.retry_after == pytest.approx(0.5)
    clock.advance(0.5)
    limiter.take(default, 5)
    # Its own budget overrides the default; rate 0 is none.
    slow = Caller("slow", "t", frozenset({"tokenize"}), tokenize_rate=1.0, tokenize_burst=2)
    limiter.take(slow, 2)
    with pytest.raises(TokenizeBudgetError):
        limiter.take(slow, 1)
    free = Caller("import", "t", frozenset({"tokenize"}), tokenize_rate=0.0)
    limiter.take(free, 1_000_000)
    # A batch over the burst never passes.
    with pytest.raises(TokenizeBudgetError) as too_large:
        limiter.take(default, 101)
    assert "smaller batches" in str(too_large.value)
