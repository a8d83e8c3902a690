"""A server keeps serving through a rotate-master (file -> new file) run beside it: it
follows the rows to the new master key, wraps the keys it makes from then on under it,
and after the key files change places a restarted server reads everything."""

from __future__ import annotations

import asyncio
import dataclasses

import grpc
from api_helpers import PURPOSE, tokenize_request

from vault.cli.master_cmd import move_key_files
from vault.clock import ManualClock
from vault.crypto.keyfile import KeyFileKek
from vault.domain.master_rotation import rotate_master
from vault.master_key import next_key_path, open_kek
from vault.server import VaultServer
from vault.storage.sqlite import SqliteStore
from vault.v1 import token_service_pb2 as pb
from vault.v1 import token_service_pb2_grpc as pb_grpc

FOLLOW_DEADLINE = 10.0


async def _reveal(stub, md, tokens: dict[str, str]) -> None:
    for token, value in tokens.items():
        resp = await stub.Detokenize(
            pb.DetokenizeRequest(token=token, purpose=PURPOSE), metadata=md
        )
        assert resp.text == value


async def test_a_running_server_follows_rotate_master(vault_factory):
    v = await vault_factory(key_refresh_interval=0.05)
    tokens = {}
    for i in range(5):
        value = f"before {i}"
        tokens[(await v.stub.Tokenize(tokenize_request("TEXT", value), metadata=v.md)).token] = (
            value
        )
    cfg = v.server.config
    old_id = v.server.keys.kek.kek_id

    store = SqliteStore(cfg.database_path)
    await store.open()
    try:
        ring = await open_kek(cfg, store)
        new = KeyFileKek.create(next_key_path(cfg))
        result = await rotate_master(store, ring, new)
        assert result.moved >= 3  # data key, fingerprint key, audit key
    finally:
        await store.close()

    loop = asyncio.get_running_loop()
    deadline = loop.time() + FOLLOW_DEADLINE
    while v.server.keys.kek.kek_id != new.kek_id:
        assert loop.time() < deadline, "the server did not follow the new master key"
        await asyncio.sleep(0.02)
    # A new tenant's fingerprint key is made now: under the new master key.
    other = await v.add_caller("other", tenant="tenant-b")
    made = await v.stub.Tokenize(tokenize_request("TEXT", "after"), metadata=other)
    assert v.sql("SELECT kek_id FROM fingerprint_keys WHERE tenant = 'tenant-b'") == [(new.kek_id,)]
    assert {r[0] for r in v.sql("SELECT kek_id FROM service_keys")} == {new.kek_id}
    await _reveal(v.stub, v.md, tokens)

    move_key_files(cfg, "file")
    assert KeyFileKek.load(cfg.master_key_path).kek_id == new.kek_id
    assert (cfg.data_dir / f"master.key.retired-{old_id.partition(':')[2]}").exists()
    await v.server.stop(grace=1.0)

    again = VaultServer(dataclasses.replace(cfg, dev=False), clock=ManualClock())
    await again.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{again.port}") as channel:
            stub = pb_grpc.TokenServiceStub(channel)
            await _reveal(stub, v.md, tokens)
            await _reveal(stub, other, {made.token: "after"})
    finally:
        await again.stop(grace=1.0)
