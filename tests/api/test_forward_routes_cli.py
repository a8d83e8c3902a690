"""`vaultctl routes add|list|remove` and `callers add --routes` as processes, on the data
dir of a running server: the server picks the changes up within route_refresh_interval,
with no restart; an http:// route is refused; no client key is ever printed."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from api_helpers import PURPOSE, bearer, expect_code
from mtls_certs import issue, make_ca
from processor_stub import start_processor

from vault.v1 import forward_service_pb2 as fpb
from vault.v1 import forward_service_pb2_grpc

VAULTCTL = Path(sys.executable).parent / "vaultctl"
JSON_CT = {"content-type": "application/json"}


def vaultctl(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VAULT_")}
    return subprocess.run(
        [str(VAULTCTL), *args, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
        stdin=subprocess.DEVNULL,
    )


async def run(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(vaultctl, data_dir, *args)


@pytest.fixture
def processor(tmp_path):
    ca = make_ca("processor CA (cli)")
    proc = start_processor(ca, tmp_path / "proc")
    yield proc
    proc.close()


async def test_routes_cli_round_trip_and_live_pickup(vault_factory, processor, tmp_path):
    vault = await vault_factory(route_refresh_interval=0.2)
    data_dir = vault.server.config.data_dir
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(processor.ca.pem)
    plain = await run(data_dir, "routes", "add", "plain", "--url", "http://127.0.0.1:1/pay")
    assert plain.returncode == 1
    assert "url" in plain.stderr
    assert "https" in plain.stderr
    client = issue(make_ca("client CA (cli)"), "vault")
    cert, key = client.write(tmp_path / "client", "vault")
    added = await run(
        data_dir, "routes", "add", "proc", "--url", f"{processor.url}/pay", "--ca", str(ca_file),
        "--client-cert", str(cert), "--client-key", str(key), "--allow-header", "X-Api-Key",
        "--timeout", "5", "--tokenize-path", "card.number",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    caller = await run(
        data_dir, "callers", "add", "checkout", "--tenant", "default", "--scopes", "forward",
        "--routes", "proc", "--json",
    )  # fmt: skip
    assert caller.returncode == 0, caller.stderr
    md = bearer(json.loads(caller.stdout)["api_key"])
    unknown = await run(
        data_dir, "callers", "add", "other", "--tenant", "default", "--scopes", "forward",
        "--routes", "missing",
    )  # fmt: skip
    assert unknown.returncode == 1
    allowed = await run(data_dir, "routes", "allow", "proc", "--caller", "dev")
    assert allowed.returncode == 0, allowed.stderr
    nobody = await run(data_dir, "routes", "allow", "proc", "--caller", "nobody")
    assert nobody.returncode == 1
    listed = await run(data_dir, "routes", "list", "--json")
    [route] = json.loads(listed.stdout)["routes"]
    assert route["callers"] == ["checkout", "dev"]
    assert route["mtls"] is True
    assert route["allow_headers"] == ["x-api-key"]
    assert "PRIVATE KEY" not in listed.stdout + added.stdout + added.stderr
    stub = forward_service_pb2_grpc.ForwardServiceStub(vault.channel)
    request = fpb.ForwardRequest(route="proc", headers=JSON_CT, body=b"{}", purpose=PURPOSE)
    # The running server sees the CLI's route within its refresh interval.
    deadline = time.monotonic() + 5
    while True:
        try:
            resp = await stub.Forward(request, metadata=md)
            break
        except grpc.aio.AioRpcError:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
    assert resp.status == 200
    assert len(processor.received) == 1
    removed = await run(data_dir, "routes", "remove", "proc")
    assert removed.returncode == 0, removed.stderr
    await asyncio.sleep(0.3)
    await expect_code(stub.Forward(request, metadata=md), grpc.StatusCode.NOT_FOUND)
    actions = [r[0] for r in vault.sql("SELECT action FROM audit_log ORDER BY seq")]
    assert "route.add" in actions
    assert "route.remove" in actions
    assert "route.allow" in actions
