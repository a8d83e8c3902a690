"""Two in-process vault servers on one PostgreSQL database (the test cluster), each with
its own data dir holding the same master key, on one ManualClock: racing deterministic
and idempotent tokenizes across replicas, all-or-nothing batches, reveals across
replicas, and the TTL purge run by the lease holder only."""

from __future__ import annotations

import asyncio
import shutil

import grpc
import pytest
from api_helpers import PURPOSE, bearer, tokenize_request
from google.protobuf import duration_pb2

from vault.clock import ManualClock
from vault.config import Config
from vault.server import VaultServer
from vault.v1 import token_service_pb2 as pb
from vault.v1 import token_service_pb2_grpc


@pytest.fixture
async def replicas(tmp_path, pg_database, pg_subject_key_database):
    clock = ManualClock()
    settings = {
        "listen": "127.0.0.1:0",
        "metrics_listen": "",
        "purge_interval": 3600,
        "database_url": pg_database,
        "subject_key_database_url": pg_subject_key_database,
    }
    first = VaultServer(Config(data_dir=tmp_path / "a", dev=True, **settings), clock=clock)
    await first.start()
    (tmp_path / "b").mkdir(mode=0o700)
    shutil.copy2(tmp_path / "a" / "master.key", tmp_path / "b" / "master.key")
    second = VaultServer(Config(data_dir=tmp_path / "b", **settings), clock=clock)
    await second.start()
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{s.port}") for s in (first, second)]
    stubs = [token_service_pb2_grpc.TokenServiceStub(c) for c in channels]
    assert first.dev_key is not None
    yield first, second, stubs, bearer(first.dev_key), clock
    for channel in channels:
        await channel.close()
    for server in (second, first):
        await server.stop(grace=1.0)


async def test_deterministic_and_idempotent_tokenizes_race_across_replicas(replicas):
    _, _, stubs, md, _ = replicas
    same_value = [
        stubs[i % 2].Tokenize(
            tokenize_request("PAN", "4242424242424242", deterministic=True), metadata=md
        )
        for i in range(20)
    ]
    same_request = [
        stubs[i % 2].Tokenize(
            tokenize_request("TEXT", "order 17", request_id="req-17"), metadata=md
        )
        for i in range(20)
    ]
    det = await asyncio.gather(*same_value)
    req = await asyncio.gather(*same_request)
    assert len({r.token for r in det}) == 1
    assert [r.created for r in det].count(True) == 1
    assert len({r.token for r in req}) == 1
    back = await stubs[1].Detokenize(
        pb.DetokenizeRequest(token=det[0].token, purpose=PURPOSE), metadata=md
    )
    assert back.text == "4242424242424242"


async def test_batches_are_all_or_nothing_and_read_through_the_other_replica(replicas):
    _, _, stubs, md, _ = replicas
    values = [f"line item {i}" for i in range(50)]
    batch = await stubs[0].BatchTokenize(
        pb.BatchTokenizeRequest(requests=[tokenize_request("TEXT", v) for v in values]),
        metadata=md,
    )
    tokens = [r.token for r in batch.responses]
    revealed = await stubs[1].BatchDetokenize(
        pb.BatchDetokenizeRequest(tokens=tokens, purpose=PURPOSE), metadata=md
    )
    assert [r.text for r in revealed.responses] == values
    # One bad item: nothing of the batch is stored.
    stored = sum((await replicas[0].store.records_by_key_version()).values())
    bad = [tokenize_request("TEXT", "fine"), tokenize_request("PAN", "4242424242424241")]
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stubs[1].BatchTokenize(pb.BatchTokenizeRequest(requests=bad), metadata=md)
    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert sum((await replicas[1].store.records_by_key_version()).values()) == stored == 50


async def test_the_ttl_purge_runs_on_the_lease_holder_only(replicas):
    first, second, stubs, md, clock = replicas
    short = await stubs[0].Tokenize(
        tokenize_request("TEXT", "short-lived", ttl=duration_pb2.Duration(seconds=60)),
        metadata=md,
    )
    clock.advance(61)
    ran = [await first.jobs.ttl_purge(), await second.jobs.ttl_purge()]
    assert ran == [True, False]
    assert await first.store.get_tokens([short.token]) == [None]
    # The holder stops cleanly: the other replica takes the job at its next run.
    await first.stop(grace=1.0)
    assert await second.jobs.ttl_purge() is True
