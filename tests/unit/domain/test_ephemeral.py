"""The CVC memory store: a byte budget shared out per tenant, expiry from the front."""

from __future__ import annotations

import pytest

from vault.clock import ManualClock
from vault.domain.ephemeral import (
    CVC_MAX_METADATA_CHARS,
    CVC_MAX_METADATA_ENTRIES,
    ENTRY_OVERHEAD_BYTES,
    RETRY_AFTER_SECONDS,
    EphemeralStore,
    cvc_metadata_violations,
)
from vault.errors import InvalidArgumentError, ResourceExhaustedError


def _store(entries: int = 10, share: float = 0.5) -> tuple[ManualClock, EphemeralStore]:
    clock = ManualClock()
    return clock, EphemeralStore(
        clock, budget_bytes=entries * ENTRY_OVERHEAD_BYTES, tenant_share=share
    )


def test_a_tenant_is_refused_past_its_share_while_another_is_not() -> None:
    _, store = _store(entries=10, share=0.5)
    for _ in range(5):
        store.put("a", "739", "", {}, 60, 1)
    with pytest.raises(ResourceExhaustedError) as refused:
        store.put("a", "739", "", {}, 60, 1)
    assert refused.value.reason == "CVC_BUDGET_EXHAUSTED"
    assert refused.value.retry_after == RETRY_AFTER_SECONDS
    assert "739" not in str(refused.value)
    for _ in range(5):
        store.put("b", "4821", "", {}, 60, 1)
    assert store.used_bytes == 10 * ENTRY_OVERHEAD_BYTES
    assert store.tenant_used_bytes("a") == store.tenant_used_bytes("b")


def test_the_whole_budget_bounds_every_tenant_together() -> None:
    _, store = _store(entries=4, share=1.0)
    for tenant in "abcd":
        store.put(tenant, "739", "", {}, 60, 1)
    with pytest.raises(ResourceExhaustedError):
        store.put("e", "739", "", {}, 60, 1)


def test_subject_and_metadata_are_charged() -> None:
    _, store = _store(entries=10)
    entry = store.put("a", "739", "cust-9", {"order": "o-1"}, 60, 1)
    assert entry.cost > ENTRY_OVERHEAD_BYTES + len("cust-9") + len("ordero-1")
    assert store.used_bytes == entry.cost


def test_expired_entries_free_their_room() -> None:
    clock, store = _store(entries=2, share=1.0)
    store.put("a", "739", "", {}, 30, 1)
    store.put("a", "739", "", {}, 90, 1)
    clock.advance(31)
    kept = store.put("a", "739", "", {}, 60, 1)  # the first one's room, freed on the way
    assert len(store) == 2
    clock.advance(60)
    assert store.purge() == 2
    assert len(store) == 0
    assert store.used_bytes == 0
    assert kept.value == bytearray(3)  # wiped


def test_revealed_entries_free_their_room_and_the_heap_stays_bounded() -> None:
    _, store = _store(entries=3, share=1.0)
    for _ in range(5000):
        entry = store.put("a", "739", "", {}, 3600, 1)
        assert store.take(entry) == "739"
    assert len(store) == 0
    assert store.used_bytes == 0
    assert len(store._expiry) <= 1024 + 1  # stale items are compacted


def test_give_back_holds_the_entry_again() -> None:
    clock, store = _store(entries=2, share=1.0)
    entry = store.put("a", "739", "", {}, 60, 1)
    value = store.take(entry)
    assert store.find("a", entry.token) is None
    store.give_back(entry, value)
    assert store.find("a", entry.token) is entry
    assert store.used_bytes == entry.cost
    clock.advance(61)
    assert store.purge() == 1  # the re-held entry still expires on time
    assert store.used_bytes == 0


def test_remove_and_erase_free_room() -> None:
    _, store = _store(entries=4, share=1.0)
    first = store.put("a", "739", "s-1", {}, 60, 1)
    store.put("a", "739", "s-1", {}, 60, 1)
    store.put("b", "739", "s-1", {}, 60, 1)
    assert store.remove("a", first.token)
    assert not store.remove("b", first.token)
    assert store.remove_subject("a", "s-1") == 1
    assert store.tenant_used_bytes("a") == 0
    assert len(store) == 1


def test_cvc_metadata_is_small() -> None:
    assert cvc_metadata_violations({"order": "o-1"}) == []
    too_many = {f"k{i}": "v" for i in range(CVC_MAX_METADATA_ENTRIES + 1)}
    too_long = {"order": "x" * (CVC_MAX_METADATA_CHARS + 1)}
    for metadata in (too_many, too_long):
        (violation,) = cvc_metadata_violations(metadata)
        assert violation.field == "metadata"
        _, store = _store()
        with pytest.raises(InvalidArgumentError):
            store.put("a", "739", "", metadata, 60, 1)
        assert len(store) == 0


def test_a_budget_that_holds_nothing_is_refused() -> None:
    with pytest.raises(ValueError, match="budget"):
        EphemeralStore(ManualClock(), budget_bytes=10)
    with pytest.raises(ValueError, match="share"):
        EphemeralStore(ManualClock(), tenant_share=0)


def test_check_room_refuses_a_batch_that_does_not_fit_and_holds_nothing() -> None:
    _, store = _store(entries=4, share=1.0)
    store.check_room("a", [("", {})] * 4)
    with pytest.raises(ResourceExhaustedError):
        store.check_room("a", [("", {})] * 5)
    assert len(store) == 0
    store.check_room("a", [])
