"""WindowedCounts, the aggregator refusals and tokenize volume share: one record per key
per window to that key's sink, quiet keys forgotten, the overflow key once full, counts
kept across a failing sink, counting outside a running loop flushed on close."""

from __future__ import annotations

from vault.audit.base import AuditEvent
from vault.audit.windows import Tally, WindowedCounts
from vault.clock import ManualClock


class Recorder:
    def __init__(self) -> None:
        self.events: list[AuditEvent] = []
        self.fail = False

    async def record(self, events) -> None:
        if self.fail:
            raise OSError("down")
        self.events.extend(events)


def event(key: str, t: Tally) -> AuditEvent:
    return AuditEvent(t.last_seen, key, "t", "x", detail={"n": str(t.count), "c": str(t.calls)})


def overflow(_key: str) -> str:
    return "*"


def counted(sink: Recorder) -> list[tuple[str, str, str]]:
    return [(e.caller, e.detail["n"], e.detail["c"]) for e in sink.events]


async def test_each_key_writes_one_record_per_window_to_its_own_sink():
    clock, one, two = ManualClock(), Recorder(), Recorder()
    counts: WindowedCounts[str] = WindowedCounts(clock, 10, 100, event, "Test")
    for _ in range(5):
        counts.tally("a", one, overflow, clock.now())[1].add(clock.now(), 3)
    counts.tally("b", two, overflow, clock.now())[1].add(clock.now())
    assert await counts.flush() == 0  # windows still open
    clock.advance(10)
    assert await counts.flush() == 2
    assert counted(one) == [("a", "15", "5")]
    assert counted(two) == [("b", "1", "1")]
    clock.advance(10)
    assert await counts.flush() == 0  # nothing counted in the window: forgotten
    assert counts.keys == 0
    await counts.close()


async def test_full_table_folds_into_the_overflow_key_and_a_failed_write_is_kept():
    clock, sink = ManualClock(), Recorder()
    counts: WindowedCounts[str] = WindowedCounts(clock, 10, 2, event, "Test")
    for name in ("a", "b", "c", "d"):
        counts.tally(name, sink, overflow, clock.now())[1].add(clock.now())
    assert counts.keys == 3  # two keys and the overflow key
    sink.fail = True
    assert await counts.flush(everything=True) == 0
    sink.fail = False
    await counts.close()
    assert sorted(counted(sink)) == [("*", "2", "2"), ("a", "1", "1"), ("b", "1", "1")]


def test_counting_without_a_running_loop_starts_no_task():
    clock, sink = ManualClock(), Recorder()
    counts: WindowedCounts[str] = WindowedCounts(clock, 10, 2, event, "Test")
    key, tally, created = counts.tally("a", sink, overflow, clock.now())
    assert (key, created) == ("a", True)
    assert counts.tally("a", sink, overflow, clock.now())[2] is False
    assert tally.calls == 0
