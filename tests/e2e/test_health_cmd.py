"""`vaultctl health`: the container health check, against a real server."""

from __future__ import annotations

import socket

import pytest

from .support import assert_one_line_failure, run_vaultctl

pytestmark = pytest.mark.slow


def test_health_is_serving_for_a_running_vault(launcher, tmp_path):
    vault = launcher.start(tmp_path / "data", metrics_listen=None)
    result = run_vaultctl("health", "--address", vault.target)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "SERVING"
    service = run_vaultctl(
        "health", "--address", vault.target, "--service", "vault.v1.TokenService"
    )
    assert service.returncode == 0
    assert service.stdout.strip() == "SERVING"


def test_health_fails_in_one_line_when_nothing_listens():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = run_vaultctl("health", "--address", f"127.0.0.1:{port}", "--timeout", "1")
    line = assert_one_line_failure(result)
    assert "UNAVAILABLE" in line or "DEADLINE_EXCEEDED" in line
