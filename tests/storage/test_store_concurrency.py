"""Store contract: many concurrent callers (the group-commit path)."""

from __future__ import annotations

import asyncio
import random

from vault.storage.base import InsertStatus

NOW = 1_800_000_000.0  # the suite's fixed clock (as in conftest.py)


async def test_200_concurrent_inserts_all_commit(store, make_record):
    calls = [[make_record() for _ in range(1 + i % 3)] for i in range(200)]
    results = await asyncio.gather(*(store.insert_tokens(c, NOW, {1: len(c)}) for c in calls))

    for call, outcomes in zip(calls, results, strict=True):
        assert [o.status for o in outcomes] == [InsertStatus.INSERTED] * len(call)
    every = [r for call in calls for r in call]
    assert await store.get_tokens([r.token for r in every]) == every
    [version] = await store.key_versions()
    assert version.encryptions == len(every)


async def test_50_concurrent_deterministic_inserts_of_one_key(store, make_record):
    records = [make_record(deterministic=True, fingerprint=b"F" * 32) for _ in range(50)]
    results = await asyncio.gather(*(store.insert_tokens([r], NOW, {}) for r in records))

    statuses = [outcomes[0].status for outcomes in results]
    assert statuses.count(InsertStatus.INSERTED) == 1
    assert statuses.count(InsertStatus.DETERMINISTIC_EXISTS) == 49
    winner = records[statuses.index(InsertStatus.INSERTED)]
    for [outcome] in results:
        if outcome.status is InsertStatus.DETERMINISTIC_EXISTS:
            assert outcome.existing == winner
    rows = await store.get_tokens([r.token for r in records])
    assert [row for row in rows if row is not None] == [winner]


async def test_50_concurrent_inserts_of_one_request_id(store, make_record):
    records = [make_record(request_id="req-1") for _ in range(50)]
    results = await asyncio.gather(*(store.insert_tokens([r], NOW, {}) for r in records))

    statuses = [outcomes[0].status for outcomes in results]
    assert statuses.count(InsertStatus.INSERTED) == 1
    assert statuses.count(InsertStatus.REQUEST_EXISTS) == 49
    winner = records[statuses.index(InsertStatus.INSERTED)]
    assert all(o.existing == winner for [o] in results if o.status is InsertStatus.REQUEST_EXISTS)


async def test_concurrent_calls_racing_for_one_token(store, make_record):
    records = [make_record(token="tok_contended") for _ in range(20)]
    results = await asyncio.gather(*(store.insert_tokens([r], NOW, {}) for r in records))

    statuses = [outcomes[0].status for outcomes in results]
    assert statuses.count(InsertStatus.INSERTED) == 1
    assert statuses.count(InsertStatus.TOKEN_TAKEN) == 19
    winner = records[statuses.index(InsertStatus.INSERTED)]
    assert await store.get_tokens(["tok_contended"]) == [winner]


async def test_mixed_concurrent_reads_and_writes(store, make_record):
    before = [make_record() for _ in range(100)]
    await store.insert_tokens(before, NOW, {})
    during = [make_record() for _ in range(100)]

    async def write(record):
        return ("write", record, await store.insert_tokens([record], NOW, {}))

    async def read(record):
        return ("read", record, await store.get_tokens([record.token, "tok_missing"]))

    work = [write(r) for r in during]
    work += [read(r) for r in before]
    work += [read(r) for r in during]  # may see the row or not, never half of it
    rng = random.Random(7)
    rng.shuffle(work)
    results = await asyncio.gather(*work)

    for action, record, answer in results:
        if action == "write":
            assert [o.status for o in answer] == [InsertStatus.INSERTED]
        elif record in before:
            assert answer == [record, None]
        else:
            assert answer in ([record, None], [None, None])
    assert await store.get_tokens([r.token for r in before + during]) == before + during


async def test_concurrent_deletes_and_inserts(store, make_record):
    old = [make_record(tenant="tenant-a") for _ in range(50)]
    await store.insert_tokens(old, NOW, {})
    new = [make_record() for _ in range(50)]
    results = await asyncio.gather(
        *(store.delete_token("tenant-a", r.token) for r in old),
        *(store.insert_tokens([r], NOW, {}) for r in new),
    )
    assert results[:50] == [True] * 50
    assert await store.get_tokens([r.token for r in old]) == [None] * 50
    assert await store.get_tokens([r.token for r in new]) == new
