"""Auto-rotation through a real server: the vault makes a new primary when the primary
reaches key_max_age or key_max_encryptions, audited as the vault's own rotation; the
tokenize path wakes the job the moment the count is crossed; servers racing add one
version. Time moves on the injected ManualClock; no test sleeps to let time pass."""

from __future__ import annotations

import asyncio
import json
import time

import grpc
from api_helpers import PURPOSE, tokenize_request

from vault.config import Config
from vault.domain.keyops import AutoRotation
from vault.server import VaultServer
from vault.v1 import token_service_pb2 as pb
from vault.v1 import token_service_pb2_grpc as pb_grpc

# The periodic check never runs by itself in these tests, unless a test says otherwise.
NO_PERIODIC = {"key_refresh_interval": 3600.0}
WAIT_SECONDS = 30.0  # bounded wait for the background job: not a timing assertion


def rotations(vault) -> list[tuple[str, str, dict[str, str]]]:
    rows = vault.sql(
        "SELECT caller, outcome, detail FROM audit_log WHERE action = 'key.rotate' ORDER BY seq"
    )
    return [(c, o, dict(json.loads(d))) for c, o, d in rows]


def key_versions(vault) -> list[tuple[int, str, int]]:
    return vault.sql("SELECT version, state, encryptions FROM key_versions ORDER BY version")


async def tokenize(vault, value: str) -> str:
    resp = await vault.stub.Tokenize(tokenize_request("TEXT", value), metadata=vault.md)
    return resp.token


def version_of(vault, token: str) -> int:
    ((version,),) = vault.sql("SELECT key_version FROM tokens WHERE token = ?", (token,))
    return int(version)


async def test_the_primary_is_replaced_at_its_cryptoperiod(vault_factory):
    vault = await vault_factory(key_max_age=100.0, **NO_PERIODIC)
    before = await tokenize(vault, "before")
    vault.clock.advance(99)
    assert await vault.server.auto_rotate() is None
    assert [v for v, _, _ in key_versions(vault)] == [1]

    vault.clock.advance(1)
    assert await vault.server.auto_rotate() == AutoRotation(1, 2, "age")
    # Used by this server at once; the old version still decrypts.
    after = await tokenize(vault, "after")
    assert (version_of(vault, before), version_of(vault, after)) == (1, 2)
    resp = await vault.stub.Detokenize(
        pb.DetokenizeRequest(token=before, purpose=PURPOSE), metadata=vault.md
    )
    assert resp.text == "before"
    assert [(v, s) for v, s, _ in key_versions(vault)] == [(1, "active"), (2, "primary")]
    assert rotations(vault) == [
        ("vault", "ok", {"old_primary": "1", "primary": "2", "trigger": "age"})
    ]
    # The new primary is young: nothing more.
    assert await vault.server.auto_rotate() is None
    assert len(key_versions(vault)) == 2


async def test_no_age_limit_when_key_max_age_is_zero(vault_factory):
    vault = await vault_factory(key_max_age=0.0, **NO_PERIODIC)
    vault.clock.advance(10 * 365 * 86400)
    assert await vault.server.auto_rotate() is None
    assert [v for v, _, _ in key_versions(vault)] == [1]


async def test_the_primary_is_replaced_at_its_encryption_limit(vault):
    # The default limit (2^30): set the count in the store rather than encrypt a billion.
    vault.sql("UPDATE key_versions SET encryptions = ? WHERE version = 1", (2**30 - 1,))
    assert await vault.server.auto_rotate() is None
    vault.sql("UPDATE key_versions SET encryptions = ? WHERE version = 1", (2**30,))
    assert await vault.server.auto_rotate() == AutoRotation(1, 2, "encryptions")
    assert rotations(vault)[-1][2]["trigger"] == "encryptions"
    assert version_of(vault, await tokenize(vault, "next")) == 2


async def test_tokenizes_crossing_the_limit_wake_the_job_at_once(vault_factory):
    vault = await vault_factory(key_max_encryptions=10, **NO_PERIODIC)
    for i in range(10):
        await tokenize(vault, f"value {i}")
    # The 10th encryption reached the limit: the job rotates without waiting for its
    # periodic check (an hour away here).
    assert vault.server.keys is not None
    deadline = time.monotonic() + WAIT_SECONDS
    while vault.server.keys.keyring.primary.version != 2:
        assert time.monotonic() < deadline, key_versions(vault)
        await asyncio.sleep(0.01)
    assert version_of(vault, await tokenize(vault, "value 10")) == 2
    # v1 stopped exactly at its limit here (calls one after another).
    assert key_versions(vault) == [(1, "active", 10), (2, "primary", 1)]
    assert rotations(vault) == [
        ("vault", "ok", {"old_primary": "1", "primary": "2", "trigger": "encryptions"})
    ]


async def test_servers_racing_to_rotate_add_one_version(vault_factory):
    vault = await vault_factory(key_max_age=100.0, **NO_PERIODIC)
    others = [
        VaultServer(
            Config(
                data_dir=vault.server.config.data_dir,
                listen="127.0.0.1:0",
                metrics_listen="",
                key_max_age=100.0,
                **NO_PERIODIC,
            ),
            clock=vault.clock,
        )
        for _ in range(2)
    ]
    for other in others:
        await other.start()
    try:
        vault.clock.advance(100)
        servers = [vault.server, *others]
        results = await asyncio.gather(*(s.auto_rotate() for s in servers))
        assert sorted(r is not None for r in results) == [False, False, True]
        assert [(v, s) for v, s, _ in key_versions(vault)] == [(1, "active"), (2, "primary")]
        # The losers reloaded the winner's version.
        for s in servers:
            assert s.keys is not None
            assert s.keys.keyring.primary.version == 2
        assert len(rotations(vault)) == 1
        async with grpc.aio.insecure_channel(f"127.0.0.1:{others[0].port}") as channel:
            resp = await pb_grpc.TokenServiceStub(channel).Tokenize(
                tokenize_request("TEXT", "on another server"), metadata=vault.md
            )
        assert version_of(vault, resp.token) == 2
    finally:
        for other in others:
            await other.stop(grace=1.0)


async def test_the_background_job_rotates_by_itself(vault_factory):
    vault = await vault_factory(key_max_age=100.0, key_refresh_interval=0.05)
    vault.clock.advance(100)
    assert vault.server.keys is not None
    deadline = time.monotonic() + WAIT_SECONDS
    while vault.server.keys.keyring.primary.version != 2:
        assert time.monotonic() < deadline, key_versions(vault)
        await asyncio.sleep(0.01)
    # Once: the new primary is young, and later checks leave it be.
    for _ in range(5):
        await asyncio.sleep(0.06)
    assert [v for v, _, _ in key_versions(vault)] == [1, 2]
    assert [c for c, _, _ in rotations(vault)] == ["vault"]
