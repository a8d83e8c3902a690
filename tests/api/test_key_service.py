"""vault.v1.KeyService through a real server and channel: only `keys` callers get in,
each RPC does what the CLI does (records move, versions retire), errors have clear
statuses, and every operation is in the audit trail under the caller's name."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import grpc
import pytest
from api_helpers import PURPOSE, assert_invalid, assert_reason, expect_code, tokenize_request
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from vault.auth.policy import ALL_SCOPES, SCOPE_KEYS
from vault.config import Config
from vault.errors import StoreUnavailableError
from vault.server import VaultServer
from vault.v1 import key_service_pb2 as kpb
from vault.v1 import key_service_pb2_grpc as kpb_grpc
from vault.v1 import token_service_pb2 as pb

# A bounded wait for background work (a rewrap) to finish: not a timing assertion.
WAIT_SECONDS = 30.0
SETTLED = 10.0  # seconds past a rotation after which a rewrap does not wait for servers

METHODS: dict[str, Any] = {
    "GetKeyStatus": kpb.GetKeyStatusRequest(),
    "RotateKey": kpb.RotateKeyRequest(),
    "RewrapKeys": kpb.RewrapKeysRequest(),
    "RetireKeyVersion": kpb.RetireKeyVersionRequest(version=1),
}


def keys_stub(vault) -> kpb_grpc.KeyServiceStub:
    return kpb_grpc.KeyServiceStub(vault.channel)


def key_audit(vault) -> list[dict[str, Any]]:
    rows = vault.sql(
        "SELECT caller, tenant, action, outcome, reason, request_id, detail FROM audit_log "
        "WHERE action LIKE 'key.%' OR action LIKE 'auth.%' ORDER BY seq"
    )
    names = ("caller", "tenant", "action", "outcome", "reason", "request_id", "detail")
    out = []
    for row in rows:
        rec = dict(zip(names, row, strict=True))
        rec["detail"] = dict(json.loads(rec["detail"]))
        out.append(rec)
    return out


async def seed(vault, n: int, tag: str) -> dict[str, str]:
    out = {}
    for i in range(n):
        value = f"{tag}-{i}@example.com"
        resp = await vault.stub.Tokenize(tokenize_request("EMAIL", value), metadata=vault.md)
        out[resp.token] = value
    return out


async def reveal_all(vault, tokens: dict[str, str]) -> None:
    resp = await vault.stub.BatchDetokenize(
        pb.BatchDetokenizeRequest(tokens=list(tokens), purpose=PURPOSE), metadata=vault.md
    )
    assert [r.text for r in resp.responses] == list(tokens.values())


def versions_on_disk(vault) -> dict[int, int]:
    rows = vault.sql("SELECT key_version, count(*) FROM tokens GROUP BY key_version")
    return {int(v): int(n) for v, n in rows}


async def wait_rewrap(stub, md, state: int) -> kpb.GetKeyStatusResponse:
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        status = await stub.GetKeyStatus(kpb.GetKeyStatusRequest(), metadata=md)
        if status.HasField("rewrap") and status.rewrap.state == state:
            return status
        assert time.monotonic() < deadline, status
        await asyncio.sleep(0.02)


# -- who may call ----------------------------------------------------------------------


@pytest.mark.parametrize("method", sorted(METHODS))
async def test_only_callers_with_the_keys_scope_get_in(vault, method):
    stub = keys_stub(vault)
    others = tuple(s for s in ALL_SCOPES if s != SCOPE_KEYS)
    without = await vault.add_caller("ops-no-keys", others)
    before = vault.sql("SELECT version, state, wrapped_key FROM key_versions ORDER BY version")

    exc = await expect_code(
        getattr(stub, method)(METHODS[method], metadata=without), grpc.StatusCode.PERMISSION_DENIED
    )
    assert_reason(exc, "MISSING_SCOPE")
    await expect_code(getattr(stub, method)(METHODS[method]), grpc.StatusCode.UNAUTHENTICATED)
    # Refused before anything happened: same keys, no rewrap started.
    assert vault.sql("SELECT version, state, wrapped_key FROM key_versions ORDER BY version") == (
        before
    )
    assert vault.sql("SELECT count(*) FROM rewrap_progress") == [(0,)]
    refusals = [r for r in key_audit(vault) if r["action"].startswith("auth.")]
    assert [(r["caller"], r["action"], r["reason"], r["detail"]["method"]) for r in refusals] == [
        ("ops-no-keys", "auth.authorize", "MISSING_SCOPE", method),
        ("", "auth.authenticate", "NO_CREDENTIAL", method),
    ]
    assert not [r for r in key_audit(vault) if r["action"].startswith("key.")]

    # A caller with only the keys scope gets in (and may not tokenize).
    only_keys = await vault.add_caller("ops-keys", (SCOPE_KEYS,))
    status = await stub.GetKeyStatus(kpb.GetKeyStatusRequest(), metadata=only_keys)
    assert [v.version for v in status.versions] == [1]
    await expect_code(
        vault.stub.Tokenize(tokenize_request("TEXT", "x"), metadata=only_keys),
        grpc.StatusCode.PERMISSION_DENIED,
    )


async def test_key_service_is_served_listed_and_healthy(vault):
    health = health_pb2_grpc.HealthStub(vault.channel)
    check = await health.Check(health_pb2.HealthCheckRequest(service="vault.v1.KeyService"))
    assert check.status == health_pb2.HealthCheckResponse.SERVING


# -- what each RPC does ------------------------------------------------------------------


async def test_status_rotate_rewrap_retire_through_the_rpcs(vault):
    stub = keys_stub(vault)
    ops = await vault.add_caller("key-admin", (SCOPE_KEYS,))
    old = await seed(vault, 20, "old")

    status = await stub.GetKeyStatus(kpb.GetKeyStatusRequest(), metadata=ops)
    (v1,) = status.versions
    assert (v1.version, v1.state, v1.encryptions, v1.records) == (1, kpb.KEY_STATE_PRIMARY, 20, 20)
    assert v1.kek_id
    assert v1.create_time.ToSeconds() == int(vault.clock.now())
    assert not status.HasField("rewrap")

    # Rotate: this server writes under v2 at once, with no refresh in between.
    rotated = await stub.RotateKey(kpb.RotateKeyRequest(), metadata=ops)
    assert rotated.previous_primary_version == 1
    assert (rotated.primary.version, rotated.primary.state) == (2, kpb.KEY_STATE_PRIMARY)
    new = await seed(vault, 5, "new")
    assert versions_on_disk(vault) == {1: 20, 2: 5}
    await reveal_all(vault, old | new)

    # Rewrap in the background: returns at once, progress in GetKeyStatus.
    vault.clock.advance(SETTLED)
    started = await stub.RewrapKeys(kpb.RewrapKeysRequest(batch_size=7), metadata=ops)
    job = started.job
    assert (job.state, job.primary_version, job.batch_size) == (kpb.REWRAP_STATE_RUNNING, 2, 7)
    assert job.remaining_records == 20
    assert job.holder
    done = await wait_rewrap(stub, ops, kpb.REWRAP_STATE_FINISHED)
    r = done.rewrap
    assert (r.rewrapped_records, r.skipped_records, r.failed_records, r.remaining_records) == (
        20,
        0,
        0,
        0,
    )
    assert (r.batches, r.holder) == (3, job.holder)
    assert r.HasField("finish_time")
    assert versions_on_disk(vault) == {2: 25}
    by_version = {v.version: v for v in done.versions}
    assert (by_version[1].state, by_version[1].records) == (kpb.KEY_STATE_ACTIVE, 0)
    assert (by_version[2].records, by_version[2].encryptions) == (25, 25)
    await reveal_all(vault, old | new)

    # Retire v1: destroyed; everything still reveals.
    retired = await stub.RetireKeyVersion(kpb.RetireKeyVersionRequest(version=1), metadata=ops)
    assert (retired.key_version.version, retired.key_version.state) == (1, kpb.KEY_STATE_RETIRED)
    assert vault.sql("SELECT wrapped_key FROM key_versions WHERE version = 1") == [(None,)]
    assert vault.server.keys is not None
    assert vault.server.keys.keyring.versions == [2]  # gone from this server's memory too
    await reveal_all(vault, old | new)

    audited = [r for r in key_audit(vault) if r["action"].startswith("key.")]
    # Each GetKeyStatus (the polls above included) is one record too.
    assert audited[0]["action"] == "key.status"
    assert len([r for r in audited if r["action"] == "key.status"]) >= 2
    rows = [r for r in audited if r["action"] != "key.status"]
    assert [(r["caller"], r["action"], r["outcome"]) for r in rows] == [
        ("key-admin", "key.rotate", "ok"),
        ("key-admin", "key.rewrap", "ok"),
        ("key-admin", "key.retire", "ok"),
    ]
    assert rows[0]["detail"] == {"old_primary": "1", "primary": "2"}
    assert rows[1]["detail"] == {
        "batch": "7",
        "rate": "0.0",
        "primary": "2",
        "rewrapped": "20",
        "skipped": "0",
        "failed": "0",
        "remaining": "0",
    }
    assert rows[2]["detail"] == {"version": "1"}
    assert all(r["tenant"] == "default" and r["request_id"] for r in audited)


async def test_a_rotation_reaches_other_servers_within_the_refresh(vault, tmp_path):
    # A second server on the same store (another process in production).
    other = VaultServer(
        Config(
            data_dir=vault.server.config.data_dir,
            listen="127.0.0.1:0",
            metrics_listen="",
            key_refresh_interval=0.05,
        ),
        clock=vault.clock,
    )
    await other.start()
    try:
        assert other.keys is not None
        assert other.keys.keyring.primary.version == 1
        await keys_stub(vault).RotateKey(kpb.RotateKeyRequest(), metadata=vault.md)
        deadline = time.monotonic() + WAIT_SECONDS
        while other.keys.keyring.primary.version != 2:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{other.port}") as channel:
            resp = await type(vault.stub)(channel).Tokenize(
                tokenize_request("TEXT", "after rotation"), metadata=vault.md
            )
        assert vault.sql("SELECT key_version FROM tokens WHERE token = ?", (resp.token,)) == [(2,)]
    finally:
        await other.stop(grace=1.0)


# -- errors ------------------------------------------------------------------------------


async def test_retire_refusals_have_clear_statuses_and_change_nothing(vault):
    stub = keys_stub(vault)
    await seed(vault, 3, "x")
    await stub.RotateKey(kpb.RotateKeyRequest(), metadata=vault.md)
    before = vault.sql("SELECT version, state, wrapped_key FROM key_versions ORDER BY version")

    for version, code, reason in (
        (1, grpc.StatusCode.FAILED_PRECONDITION, "KEY_VERSION_IN_USE"),
        (2, grpc.StatusCode.FAILED_PRECONDITION, "KEY_VERSION_PRIMARY"),
        (9, grpc.StatusCode.NOT_FOUND, "KEY_VERSION_UNKNOWN"),
    ):
        exc = await expect_code(
            stub.RetireKeyVersion(kpb.RetireKeyVersionRequest(version=version), metadata=vault.md),
            code,
        )
        assert_reason(exc, reason)
        assert str(version) in (exc.details() or "")
    exc = await expect_code(
        stub.RetireKeyVersion(kpb.RetireKeyVersionRequest(), metadata=vault.md),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert_invalid(exc, "version")
    assert vault.sql("SELECT version, state, wrapped_key FROM key_versions ORDER BY version") == (
        before
    )
    retires = [r for r in key_audit(vault) if r["action"] == "key.retire"]
    assert [(r["outcome"], r["reason"], r["detail"]) for r in retires] == [
        ("denied", "KEY_VERSION_IN_USE", {"version": "1"}),
        ("denied", "KEY_VERSION_PRIMARY", {"version": "2"}),
        ("denied", "KEY_VERSION_UNKNOWN", {"version": "9"}),
    ]


async def test_rewrap_arguments_are_checked(vault):
    stub = keys_stub(vault)
    for request, field in (
        (kpb.RewrapKeysRequest(batch_size=10_001), "batch_size"),
        (kpb.RewrapKeysRequest(rate=-1), "rate"),
        (kpb.RewrapKeysRequest(rate=float("nan")), "rate"),
    ):
        exc = await expect_code(
            stub.RewrapKeys(request, metadata=vault.md), grpc.StatusCode.INVALID_ARGUMENT
        )
        assert_invalid(exc, field)
    assert vault.sql("SELECT count(*) FROM rewrap_progress") == [(0,)]


async def test_a_running_rewrap_shows_in_status_and_refuses_a_second(vault):
    stub = keys_stub(vault)
    await seed(vault, 6, "slow")
    await stub.RotateKey(kpb.RotateKeyRequest(), metadata=vault.md)
    vault.clock.advance(SETTLED)
    # One record a batch, one a second: still running while the test looks.
    started = await stub.RewrapKeys(
        kpb.RewrapKeysRequest(batch_size=1, rate=1.0), metadata=vault.md
    )
    running = await stub.GetKeyStatus(kpb.GetKeyStatusRequest(), metadata=vault.md)
    assert running.rewrap.state == kpb.REWRAP_STATE_RUNNING
    assert running.rewrap.holder == started.job.holder
    assert running.rewrap.rate == 1.0

    exc = await expect_code(
        stub.RewrapKeys(kpb.RewrapKeysRequest(), metadata=vault.md),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert_reason(exc, "REWRAP_RUNNING")
    rewraps = [r for r in key_audit(vault) if r["action"] == "key.rewrap"]
    assert [(r["outcome"], r["reason"]) for r in rewraps] == [("denied", "REWRAP_RUNNING")]

    # Stopping the server stops the run; its lease is released and status says so.
    await vault.server.stop(grace=1.0)
    assert vault.sql("SELECT count(*) FROM rewrap_lease") == [(0,)]
    ((finished,),) = vault.sql("SELECT finished_at FROM rewrap_progress")
    assert finished is None  # interrupted: a new RewrapKeys continues


async def test_a_rewrap_held_by_another_process_is_refused(vault):
    now = vault.clock.now()
    assert await vault.server.store.take_rewrap_lease("vaultctl-run", now, now + 60)
    exc = await expect_code(
        keys_stub(vault).RewrapKeys(kpb.RewrapKeysRequest(), metadata=vault.md),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert_reason(exc, "REWRAP_RUNNING")
    assert not await vault.server.store.take_rewrap_lease("third", now, now + 60)


async def test_reflection_lists_and_describes_the_key_service(vault):
    stub = reflection_pb2_grpc.ServerReflectionStub(vault.channel)
    requests = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="vault.v1.KeyService"),
    ]
    listed, described = [r async for r in stub.ServerReflectionInfo(iter(requests))]
    assert "vault.v1.KeyService" in {s.name for s in listed.list_services_response.service}
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in described.file_descriptor_response.file_descriptor_proto
    ]
    methods = {m.name for f in files for s in f.service if s.name == "KeyService" for m in s.method}
    assert methods == set(METHODS)


async def test_clients_keep_working_through_rpc_rotate_and_rewrap(vault):
    """A client tokenizes and reveals without pause while RotateKey and RewrapKeys run;
    no call fails, every record ends on the new version, and the old one retires."""
    stub = keys_stub(vault)
    seeded = await seed(vault, 40, "seed")
    failures: list[str] = []
    made: dict[str, str] = {}
    stop = asyncio.Event()

    async def client() -> None:
        i = 0
        while not stop.is_set():
            value = f"loop-{i}@example.com"
            i += 1
            try:
                resp = await vault.stub.Tokenize(
                    tokenize_request("EMAIL", value), metadata=vault.md
                )
                back = await vault.stub.Detokenize(
                    pb.DetokenizeRequest(token=resp.token, purpose=PURPOSE), metadata=vault.md
                )
                if back.text != value:
                    failures.append("wrong value")
                made[resp.token] = value
            except grpc.aio.AioRpcError as exc:
                failures.append(exc.code().name)

    task = asyncio.create_task(client())
    try:
        deadline = time.monotonic() + WAIT_SECONDS
        while len(made) < 10:  # the client is under way before the rotation
            assert time.monotonic() < deadline, failures
            await asyncio.sleep(0.01)
        await stub.RotateKey(kpb.RotateKeyRequest(), metadata=vault.md)
        vault.clock.advance(SETTLED)
        await stub.RewrapKeys(kpb.RewrapKeysRequest(batch_size=8), metadata=vault.md)
        done = await wait_rewrap(stub, vault.md, kpb.REWRAP_STATE_FINISHED)
        assert done.rewrap.failed_records == 0
    finally:
        stop.set()
        await task
    assert failures == []
    assert len(made) >= 10
    # Records written after the rotation were already on v2; the rewrap moved the rest.
    assert versions_on_disk(vault) == {2: len(seeded) + len(made)}
    await stub.RetireKeyVersion(kpb.RetireKeyVersionRequest(version=1), metadata=vault.md)
    await reveal_all(vault, seeded)
    await reveal_all(vault, dict(list(made.items())[:500]))


async def test_no_value_or_key_in_what_the_key_service_shows_or_records(vault):
    pan = "4111111111111111"
    await vault.stub.Tokenize(tokenize_request("PAN", pan), metadata=vault.md)
    stub = keys_stub(vault)
    await stub.RotateKey(kpb.RotateKeyRequest(), metadata=vault.md)
    vault.clock.advance(SETTLED)
    await stub.RewrapKeys(kpb.RewrapKeysRequest(), metadata=vault.md)
    status = await wait_rewrap(stub, vault.md, kpb.REWRAP_STATE_FINISHED)
    wrapped = [w for (w,) in vault.sql("SELECT wrapped_key FROM key_versions") if w]
    shown = status.SerializeToString()
    recorded = json.dumps(key_audit(vault)).encode()
    progress = repr(vault.sql("SELECT * FROM rewrap_progress")).encode()
    for blob in (shown, recorded, progress):
        assert pan[-8:].encode() not in blob
        assert all(w not in blob and w.hex().encode() not in blob for w in wrapped)


async def test_key_operations_fail_when_the_trail_cannot_be_written(vault, monkeypatch):
    # The store's audit append fails (injected: SQLite has no "disk down" switch).
    async def unavailable(rows, seal):
        raise StoreUnavailableError("the store could not commit")

    monkeypatch.setattr(vault.server.store, "append_audit", unavailable)
    stub = keys_stub(vault)
    for call in (
        stub.GetKeyStatus(kpb.GetKeyStatusRequest(), metadata=vault.md),
        stub.RotateKey(kpb.RotateKeyRequest(), metadata=vault.md),
    ):
        exc = await expect_code(call, grpc.StatusCode.UNAVAILABLE)
        assert_reason(exc, "AUDIT_UNAVAILABLE")
    # A refusal keeps its own status when its record cannot be written.
    exc = await expect_code(
        stub.RetireKeyVersion(kpb.RetireKeyVersionRequest(version=9), metadata=vault.md),
        grpc.StatusCode.NOT_FOUND,
    )
    assert_reason(exc, "KEY_VERSION_UNKNOWN")


async def test_concurrent_rotations_each_add_one_version_or_abort(vault):
    stub = keys_stub(vault)
    calls = [stub.RotateKey(kpb.RotateKeyRequest(), metadata=vault.md) for _ in range(6)]
    results = await asyncio.gather(*calls, return_exceptions=True)
    done = [r for r in results if isinstance(r, kpb.RotateKeyResponse)]
    aborted = [r for r in results if not isinstance(r, kpb.RotateKeyResponse)]
    for exc in aborted:
        assert isinstance(exc, grpc.aio.AioRpcError), exc
        assert exc.code() == grpc.StatusCode.ABORTED
        assert_reason(exc, "ROTATION_CONFLICT")
    assert done
    # Versions stay numbered without gaps, one per rotation that succeeded, one primary.
    rows = vault.sql("SELECT version, state FROM key_versions ORDER BY version")
    assert [v for v, _ in rows] == list(range(1, len(done) + 2))
    assert [s for _, s in rows].count("primary") == 1
    assert sorted(r.primary.version for r in done) == list(range(2, len(done) + 2))
    rotates = [r for r in key_audit(vault) if r["action"] == "key.rotate"]
    assert sorted((r["outcome"], r["reason"]) for r in rotates) == sorted(
        [("ok", "")] * len(done) + [("error", "ROTATION_CONFLICT")] * len(aborted)
    )
