"""The probe and healthcheck service names and commands against a real server serving
mTLS as the pod does: what the kubelet and Docker would ask is answered SERVING, and a
name outside the health contract is not (so a typo in a manifest cannot pass by
accident)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import grpc
import pytest
from deploy_helpers import KUBERNETES, healthcheck, relocated, vaultctl_args, yaml_documents
from grpc_health.v1 import health_pb2, health_pb2_grpc

from vault.cli.main import main


def _probe_commands() -> dict[str, list[str]]:
    [deployment] = yaml_documents(KUBERNETES / "deployment.yaml")
    [vault] = [
        c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "vault"
    ]
    return {
        k: list(vault[k]["exec"]["command"])
        for k in ("startupProbe", "livenessProbe", "readinessProbe")
    }


def _probes() -> dict[str, Any]:
    return {name: vaultctl_args(command[1:]) for name, command in _probe_commands().items()}


def _mtls(certs: Path) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        (certs / "ca.crt").read_bytes(),
        (certs / "tls.key").read_bytes(),
        (certs / "tls.crt").read_bytes(),
    )


async def test_every_probe_service_is_serving_on_a_running_vault(deployed_vault, tmp_path):
    target = f"127.0.0.1:{deployed_vault.port}"
    async with grpc.aio.secure_channel(target, _mtls(tmp_path / "certs")) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for name, probe in _probes().items():
            reply = await health.Check(
                health_pb2.HealthCheckRequest(service=probe.service), timeout=5
            )
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, name
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await health.Check(
                health_pb2.HealthCheckRequest(service="vault.v1.TokenServic"), timeout=5
            )
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


async def test_every_probe_command_passes_on_a_running_vault(deployed_vault, tmp_path, capsys):
    for name, command in _probe_commands().items():
        argv = relocated(command[1:], tmp_path / "certs")
        argv[argv.index("--address") + 1] = f"127.0.0.1:{deployed_vault.port}"
        assert await asyncio.to_thread(main, argv) == 0, name
        assert capsys.readouterr().out.strip() == "SERVING", name


async def test_the_image_healthcheck_command_passes_on_a_running_vault(
    deployed_vault, tmp_path, capsys
):
    _, command = healthcheck()
    argv = relocated(command[1:], tmp_path / "certs")
    argv[argv.index("--address") + 1] = f"127.0.0.1:{deployed_vault.port}"
    assert await asyncio.to_thread(main, argv) == 0
    assert capsys.readouterr().out.strip() == "SERVING"
