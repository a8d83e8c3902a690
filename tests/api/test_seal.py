"""A vault whose master key is split among custodians (kek_provider = shares), through a
real server on port 0 and a real channel: it starts sealed (health only, TokenService
UNAVAILABLE / VAULT_SEALED), K valid shares from keys-scope callers unseal it, K-1 do
not, wrong, duplicate and malformed shares are refused with progress kept, and the
submissions reach the audit trail (never the shares) once it can be written."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from api_helpers import (
    PURPOSE,
    assert_reason,
    bearer,
    close_refusal_window,
    expect_code,
    tokenize_request,
)
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY

from vault import metrics
from vault.api.seal_service import ACTION_UNSEAL_SHARE, PendingAudit
from vault.audit.base import ACTION_AUTHENTICATE, AuditEvent
from vault.auth.apikeys import hash_secret, mint_api_key
from vault.clock import ManualClock
from vault.config import Config
from vault.crypto.keyfile import KeyFileKek
from vault.domain.keys import init_keyring
from vault.domain.unseal import SHARES_SOURCE, new_share_scheme
from vault.errors import FailedPreconditionError
from vault.secrets import SecretBytes
from vault.server import VaultServer
from vault.storage.base import CallerRow
from vault.storage.sqlite import SqliteStore
from vault.v1 import key_service_pb2 as key_pb
from vault.v1 import key_service_pb2_grpc as key_grpc
from vault.v1 import seal_service_pb2 as seal_pb
from vault.v1 import seal_service_pb2_grpc as seal_grpc
from vault.v1 import token_service_pb2 as pb
from vault.v1 import token_service_pb2_grpc as pb_grpc

TOKEN_SERVICE = "vault.v1.TokenService"
KEY_SERVICE = "vault.v1.KeyService"


@dataclass
class Sealed:
    server: VaultServer
    channel: grpc.aio.Channel
    seal: seal_grpc.SealServiceStub
    tokens: pb_grpc.TokenServiceStub
    health: health_pb2_grpc.HealthStub
    shares: list[str]
    custodians: list[tuple[tuple[str, str], ...]]  # keys scope, one per custodian
    app: tuple[tuple[str, str], ...]  # tokenize + detokenize, no keys scope
    db_path: Path

    async def submit(self, share: str, md=None):
        return await self.seal.SubmitUnsealShare(
            seal_pb.SubmitUnsealShareRequest(share=share), metadata=md or self.custodians[0]
        )

    async def status(self):
        return await self.seal.GetSealStatus(seal_pb.GetSealStatusRequest(), metadata=self.app)

    async def serving(self, service: str = TOKEN_SERVICE) -> int:
        reply = await self.health.Check(health_pb2.HealthCheckRequest(service=service))
        return reply.status

    def sql(self, statement: str) -> list[tuple]:
        with contextlib.closing(sqlite3.connect(self.db_path, timeout=10)) as conn:
            return conn.execute(statement).fetchall()


async def _caller(store, name: str, scopes: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    key = mint_api_key()
    await store.add_caller(
        CallerRow(name, "default", scopes, key.key_id, hash_secret(key.secret), 0.0, None, None)
    )
    return bearer(key.text)


def _new_dir(path: Path) -> Path:
    path.mkdir(mode=0o700)
    return path


async def _init(data_dir: Path, threshold: int, count: int):
    """What `vaultctl keys init --shares N --threshold K` leaves, plus callers."""
    store = SqliteStore(data_dir / "vault.db")
    await store.open()
    try:
        key = SecretBytes(os.urandom(32))
        scheme, shares = new_share_scheme(key, threshold, count, 0.0)
        assert await store.put_share_scheme(scheme)
        await init_keyring(store, KeyFileKek(key, source=SHARES_SOURCE), ManualClock())
        custodians = [await _caller(store, f"custodian-{i}", ("keys",)) for i in range(count)]
        app = await _caller(store, "checkout", ("tokenize", "detokenize"))
    finally:
        await store.close()
    return [s.text() for s in shares], custodians, app


@pytest.fixture
async def sealed_factory(tmp_path):
    started: list[Sealed] = []

    async def start(threshold: int = 2, count: int = 3) -> Sealed:
        data_dir = _new_dir(tmp_path / f"data{len(started)}")
        shares, custodians, app = await _init(data_dir, threshold, count)
        config = Config(
            data_dir=data_dir,
            listen="127.0.0.1:0",
            metrics_listen="",
            kek_provider="shares",
            purge_interval=3600,
        )
        server = VaultServer(config, clock=ManualClock())
        await server.start()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
        v = Sealed(
            server,
            channel,
            seal_grpc.SealServiceStub(channel),
            pb_grpc.TokenServiceStub(channel),
            health_pb2_grpc.HealthStub(channel),
            shares,
            custodians,
            app,
            config.database_path,
        )
        started.append(v)
        return v

    yield start
    for v in started:
        await v.channel.close()
        await v.server.stop(grace=1.0)


@pytest.fixture
async def sealed(sealed_factory) -> Sealed:
    return await sealed_factory()


async def _assert_sealed(v: Sealed) -> None:
    assert await v.serving("") == health_pb2.HealthCheckResponse.SERVING
    assert await v.serving() == health_pb2.HealthCheckResponse.NOT_SERVING
    exc = await expect_code(
        v.tokens.Tokenize(tokenize_request("TEXT", "hello"), metadata=v.app),
        grpc.StatusCode.UNAVAILABLE,
    )
    assert_reason(exc, "VAULT_SEALED")
    exc = await expect_code(
        v.tokens.Detokenize(pb.DetokenizeRequest(token="tok", purpose=PURPOSE), metadata=v.app),
        grpc.StatusCode.UNAVAILABLE,
    )
    assert_reason(exc, "VAULT_SEALED")
    # KeyService holds the keys too: gated the same way, even for a keys-scope caller.
    assert await v.serving(KEY_SERVICE) == health_pb2.HealthCheckResponse.NOT_SERVING
    exc = await expect_code(
        key_grpc.KeyServiceStub(v.channel).GetKeyStatus(
            key_pb.GetKeyStatusRequest(), metadata=v.custodians[0]
        ),
        grpc.StatusCode.UNAVAILABLE,
    )
    assert_reason(exc, "VAULT_SEALED")


async def test_starts_sealed_serving_only_health_and_seal_status(sealed):
    await _assert_sealed(sealed)
    assert metrics.SEALED._value.get() == 1
    status = await sealed.status()
    assert (status.sealed, status.threshold, status.shares_submitted, status.share_count) == (
        True,
        2,
        0,
        3,
    )


@pytest.mark.parametrize("pick", [(0, 1), (1, 2), (2, 0)])
async def test_k_of_n_unseal_and_then_serve(sealed, pick):
    first, second = pick
    reply = await sealed.submit(sealed.shares[first], sealed.custodians[first])
    assert (reply.sealed, reply.threshold, reply.shares_submitted) == (True, 2, 1)
    await _assert_sealed(sealed)
    reply = await sealed.submit(sealed.shares[second], sealed.custodians[second])
    assert (reply.sealed, reply.shares_submitted) == (False, 2)
    assert await sealed.serving() == health_pb2.HealthCheckResponse.SERVING
    assert await sealed.serving(KEY_SERVICE) == health_pb2.HealthCheckResponse.SERVING
    keys = await key_grpc.KeyServiceStub(sealed.channel).GetKeyStatus(
        key_pb.GetKeyStatusRequest(), metadata=sealed.custodians[0]
    )
    assert [v.version for v in keys.versions] == [1]
    assert (await sealed.status()).sealed is False
    assert metrics.SEALED._value.get() == 0
    made = await sealed.tokens.Tokenize(
        tokenize_request("TEXT", "after unseal"), metadata=sealed.app
    )
    back = await sealed.tokens.Detokenize(
        pb.DetokenizeRequest(token=made.token, purpose=PURPOSE), metadata=sealed.app
    )
    assert back.text == "after unseal"


async def test_k_minus_one_of_a_larger_split_stays_sealed(sealed_factory):
    v = await sealed_factory(threshold=3, count=5)
    for i, expected in ((4, 1), (0, 2)):
        reply = await v.submit(v.shares[i], v.custodians[i])
        assert (reply.sealed, reply.shares_submitted) == (True, expected)
    await _assert_sealed(v)
    reply = await v.submit(v.shares[2], v.custodians[2])
    assert reply.sealed is False


async def test_a_share_of_another_split_is_refused_and_progress_kept(sealed_factory):
    v = await sealed_factory()
    other = await sealed_factory()
    await v.submit(v.shares[0])
    exc = await expect_code(v.submit(other.shares[1]), grpc.StatusCode.INVALID_ARGUMENT)
    assert_reason(exc, "SHARE_UNKNOWN")
    assert other.shares[1] not in exc.details()
    assert (await v.status()).shares_submitted == 1
    assert (await v.submit(v.shares[1])).sealed is False


async def test_duplicate_and_malformed_shares_are_refused_and_progress_kept(sealed):
    await sealed.submit(sealed.shares[0])
    exc = await expect_code(sealed.submit(sealed.shares[0]), grpc.StatusCode.ALREADY_EXISTS)
    assert_reason(exc, "SHARE_ALREADY_SUBMITTED")
    exc = await expect_code(sealed.submit(sealed.shares[1][:-4]), grpc.StatusCode.INVALID_ARGUMENT)
    assert_reason(exc, "SHARE_MALFORMED")
    assert (await sealed.status()).shares_submitted == 1
    await _assert_sealed(sealed)
    assert (await sealed.submit(sealed.shares[2])).sealed is False


async def test_submitting_needs_the_keys_scope(sealed):
    exc = await expect_code(
        sealed.submit(sealed.shares[0], sealed.app), grpc.StatusCode.PERMISSION_DENIED
    )
    assert_reason(exc, "MISSING_SCOPE")
    exc = await expect_code(
        sealed.seal.SubmitUnsealShare(seal_pb.SubmitUnsealShareRequest(share=sealed.shares[0])),
        grpc.StatusCode.UNAUTHENTICATED,
    )
    assert (await sealed.status()).shares_submitted == 0


async def test_after_unseal_more_shares_are_refused(sealed):
    await sealed.submit(sealed.shares[0])
    await sealed.submit(sealed.shares[1])
    exc = await expect_code(sealed.submit(sealed.shares[2]), grpc.StatusCode.FAILED_PRECONDITION)
    assert_reason(exc, "NOT_SEALED")


async def test_shares_that_do_not_unwrap_the_data_keys_load_nothing(sealed):
    # The data key was replaced behind the vault's back: the rebuilt master key is the
    # recorded one, but the keys it should unwrap do not. Nothing is loaded; start over.
    with contextlib.closing(sqlite3.connect(sealed.db_path)) as conn:
        conn.execute("UPDATE key_versions SET wrapped_key = randomblob(60)")
        conn.commit()
    await sealed.submit(sealed.shares[0])
    exc = await expect_code(sealed.submit(sealed.shares[1]), grpc.StatusCode.UNAVAILABLE)
    assert_reason(exc, "UNSEAL_FAILED")
    status = await sealed.status()
    assert (status.sealed, status.shares_submitted) == (True, 0)
    await _assert_sealed(sealed)


async def test_submissions_are_audited_after_unseal_without_the_shares(sealed):
    await expect_code(
        sealed.seal.SubmitUnsealShare(seal_pb.SubmitUnsealShareRequest(share=sealed.shares[0])),
        grpc.StatusCode.UNAUTHENTICATED,
    )
    await expect_code(
        sealed.submit(sealed.shares[0], sealed.app), grpc.StatusCode.PERMISSION_DENIED
    )
    await sealed.submit(sealed.shares[0], sealed.custodians[0])
    await expect_code(sealed.submit(sealed.shares[0]), grpc.StatusCode.ALREADY_EXISTS)
    await sealed.submit(sealed.shares[2], sealed.custodians[2])
    rows = sealed.sql("SELECT caller, action, outcome, reason, detail FROM audit_log ORDER BY seq")
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [
        ("", "auth.authenticate", "denied", "NO_CREDENTIAL"),
        ("checkout", "key.unseal_share", "denied", "MISSING_SCOPE"),
        ("custodian-0", "key.unseal_share", "ok", ""),
        ("custodian-0", "key.unseal_share", "error", "SHARE_ALREADY_SUBMITTED"),
        ("custodian-2", "key.unseal_share", "ok", ""),
        ("custodian-2", "key.unseal", "ok", ""),
    ]
    with contextlib.closing(sqlite3.connect(sealed.db_path)) as conn:
        dump = "\n".join(conn.iterdump())
    wal = sealed.db_path.with_name("vault.db-wal")
    raw = sealed.db_path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")
    for share in sealed.shares:
        secret_hex = share.split(":")[2]
        assert secret_hex not in dump
        assert secret_hex.encode() not in raw
        assert bytes.fromhex(secret_hex) not in raw


async def test_a_vault_with_a_key_file_is_not_sealed(vault):
    stub = seal_grpc.SealServiceStub(vault.channel)
    status = await stub.GetSealStatus(seal_pb.GetSealStatusRequest(), metadata=vault.md)
    assert (status.sealed, status.threshold) == (False, 0)
    exc = await expect_code(
        stub.SubmitUnsealShare(seal_pb.SubmitUnsealShareRequest(share="x"), metadata=vault.md),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert_reason(exc, "SHARE_MALFORMED")


@pytest.mark.parametrize("extra", [{"workers": 2}, {"dev": True}])
async def test_a_split_master_key_needs_one_plain_server_process(tmp_path, extra):
    data_dir = _new_dir(tmp_path / "data")
    await _init(data_dir, 2, 2)
    config = Config(
        data_dir=data_dir, listen="127.0.0.1:0", metrics_listen="", kek_provider="shares", **extra
    )
    with pytest.raises(FailedPreconditionError) as raised:
        await VaultServer(config, clock=ManualClock()).start()
    assert raised.value.reason == "BAD_CONFIG"


async def test_shares_provider_on_a_store_that_is_not_split(vault):
    config = Config(
        data_dir=vault.server.config.data_dir,
        listen="127.0.0.1:0",
        metrics_listen="",
        kek_provider="shares",
    )
    with pytest.raises(FailedPreconditionError) as raised:
        await VaultServer(config, clock=ManualClock()).start()
    assert raised.value.reason == "BAD_CONFIG"


def _dropped(action: str) -> float:
    value = REGISTRY.get_sample_value("vault_audit_events_dropped_total", {"action": action})
    return value or 0.0


async def test_a_flood_of_anonymous_calls_while_sealed_leaves_room_for_the_shares(sealed):
    dropped = [_dropped(a) for a in (ACTION_AUTHENTICATE, ACTION_UNSEAL_SHARE)]
    share_request = seal_pb.SubmitUnsealShareRequest(share=sealed.shares[0])
    results: list = []
    remaining = iter(range(3000))
    past_old_buffer = asyncio.Event()  # more refusals than the 1,000 events it once held

    async def anonymous() -> None:  # 64 in flight, as many calls as the old buffer x 3
        for i in remaining:
            call = (
                sealed.seal.SubmitUnsealShare(share_request)
                if i % 2
                else sealed.seal.GetSealStatus(seal_pb.GetSealStatusRequest())
            )
            results.append(await asyncio.gather(call, return_exceptions=True))
            if len(results) >= 1200:
                past_old_buffer.set()

    flood = asyncio.gather(*(anonymous() for _ in range(64)))
    await past_old_buffer.wait()
    first = await sealed.submit(sealed.shares[0], sealed.custodians[0])
    second = await sealed.submit(sealed.shares[2], sealed.custodians[2])
    await flood
    results = [r for (r,) in results]
    assert (first.sealed, second.sealed) == (True, False)
    codes = {r.code() for r in results if isinstance(r, grpc.aio.AioRpcError)}
    assert len(results) == 3000
    assert codes <= {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.RESOURCE_EXHAUSTED}
    # Every submission reached the trail once the vault unsealed...
    rows = sealed.sql("SELECT caller, action, outcome FROM audit_log ORDER BY seq")
    assert [r for r in rows if r[1].startswith("key.")] == [
        ("custodian-0", "key.unseal_share", "ok"),
        ("custodian-2", "key.unseal_share", "ok"),
        ("custodian-2", "key.unseal", "ok"),
    ]
    # ... the 3,000 refusals as a few aggregated records, and nothing was dropped.
    refusals = await close_refusal_window(
        sealed.server.clock,
        lambda: sealed.sql("SELECT detail FROM audit_log WHERE action = 'auth.authenticate'"),
        6,
    )
    assert len(refusals) <= 8
    assert sum(int(dict(json.loads(d))["count"]) for (d,) in refusals) == 3000
    assert [_dropped(a) for a in (ACTION_AUTHENTICATE, ACTION_UNSEAL_SHARE)] == dropped


class _Recorder:
    def __init__(self) -> None:
        self.events: list[AuditEvent] = []

    async def record(self, events) -> None:
        self.events.extend(events)


async def test_the_sealed_buffer_keeps_room_for_submissions_and_counts_drops(caplog):
    pending = PendingAudit(max_unseal_events=2, max_other_events=10)
    before = [_dropped(a) for a in (ACTION_AUTHENTICATE, ACTION_UNSEAL_SHARE)]
    refusals = [
        AuditEvent(float(i), "", "", ACTION_AUTHENTICATE, outcome="denied", reason="BAD_CREDENTIAL")
        for i in range(15)
    ]
    shares = [
        AuditEvent(100.0 + i, f"custodian-{i}", "default", ACTION_UNSEAL_SHARE) for i in range(3)
    ]
    with caplog.at_level("WARNING", logger="vault.api.seal_service"):
        await pending.record(refusals)
        await pending.record(shares[:2])  # the refusals took all theirs, not these
        await pending.record(shares[2:])  # past the submissions' own budget
    after = [_dropped(a) for a in (ACTION_AUTHENTICATE, ACTION_UNSEAL_SHARE)]
    assert [a - b for a, b in zip(after, before, strict=True)] == [5, 1]
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "audit buffer full while sealed: 5 auth.authenticate event(s) dropped",
        "audit buffer full while sealed: 1 key.unseal_share event(s) dropped",
    ]
    trail = _Recorder()
    pending.attach(trail)
    await pending.record([])
    assert trail.events == [*refusals[:10], *shares[:2]]
