"""Store contract: the audit chain (append, read back, concurrent appenders, audit key)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac

from vault.storage.base import AUDIT_GENESIS_MAC, AuditHead, AuditRow

KEY = b"k" * 32


def seal(prev: bytes, content: bytes) -> bytes:
    return hmac.new(KEY, prev + content, hashlib.sha256).digest()


def event(n: int, **fields) -> AuditRow:
    values = {
        "seq": 0,
        "time": 1_800_000_000.0 + n,
        "caller": f"caller-{n}",
        "tenant": "tenant-a",
        "action": "token.reveal",
        "tokens": (f"tok_{n:032d}",),
        "purpose": "refund ✓",
        "outcome": "ok",
        "reason": "",
        "request_id": f"req-{n}",
        "peer": "ipv4:127.0.0.1:1",
        "detail": (("batch_size", "2"), ("kind", "PAN")),
        "mac": b"",
    }
    values.update(fields)
    return AuditRow(**values)


def assert_linear_chain(rows: list[AuditRow]) -> None:
    prev = AUDIT_GENESIS_MAC
    for i, r in enumerate(rows, start=1):
        assert r.seq == i
        assert r.mac == seal(prev, r.content()), f"seq {i} does not chain"
        prev = r.mac


async def test_append_assigns_seq_and_chains_macs(empty_store):
    first = await empty_store.append_audit([event(1), event(2)], seal)
    second = await empty_store.append_audit([event(3)], seal)

    assert [r.seq for r in first + second] == [1, 2, 3]
    stored = await empty_store.audit_records(0, 100)
    assert stored == first + second
    assert_linear_chain(stored)
    # Every field comes back as given (apart from seq and mac, which the store sets).
    assert stored[0].purpose == "refund ✓"
    assert stored[0].detail == (("batch_size", "2"), ("kind", "PAN"))
    assert stored[2].tokens == (f"tok_{3:032d}",)
    head = await empty_store.audit_head()
    assert head == AuditHead(3, seal(stored[2].mac, AuditHead.content(3)))


async def test_audit_records_pages_by_seq(empty_store):
    await empty_store.append_audit([event(n) for n in range(10)], seal)
    assert [r.seq for r in await empty_store.audit_records(3, 4)] == [4, 5, 6, 7]
    assert await empty_store.audit_records(10, 5) == []
    assert await empty_store.audit_head() is not None


async def test_empty_trail(empty_store):
    assert await empty_store.audit_records(0, 10) == []
    assert await empty_store.audit_head() is None
    assert await empty_store.append_audit([], seal) == []


async def test_concurrent_appends_of_one_store_keep_order_within_a_call(empty_store):
    calls = [[event(10 * i + j) for j in range(1 + i % 3)] for i in range(50)]
    results = await asyncio.gather(*(empty_store.append_audit(c, seal) for c in calls))
    stored = await empty_store.audit_records(0, 1000)
    assert len(stored) == sum(len(c) for c in calls)
    assert_linear_chain(stored)
    for call, got in zip(calls, results, strict=True):
        assert [r.caller for r in got] == [r.caller for r in call]
        seqs = [r.seq for r in got]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))


async def test_two_stores_on_one_database_extend_one_linear_chain(backend):
    a, b = backend.new_store(), backend.new_store()
    await a.open()
    await b.open()
    try:
        work = [a.append_audit([event(i)], seal) for i in range(0, 100, 2)]
        work += [b.append_audit([event(i), event(i + 1000)], seal) for i in range(1, 100, 2)]
        await asyncio.gather(*work)
        stored = await a.audit_records(0, 1000)
    finally:
        await a.close()
        await b.close()
    assert len(stored) == 50 + 100
    assert_linear_chain(stored)


async def test_service_key_first_writer_wins(backend):
    a, b = backend.new_store(), backend.new_store()
    await a.open()
    await b.open()
    try:
        assert await a.service_key("audit:1") is None
        first = await a.put_service_key("audit:1", b"wrapped-a", "kek", 1.0)
        second = await b.put_service_key("audit:1", b"wrapped-b", "kek", 2.0)
        assert first == second == b"wrapped-a"
        assert await b.service_key("audit:1") == b"wrapped-a"
        assert await b.service_key("audit:2") is None
    finally:
        await a.close()
        await b.close()
