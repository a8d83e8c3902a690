"""TLS by default, through real `vaultctl` processes (issue 12, items 2 and 4).

This machine has a non-loopback address (192.0.2.2 on eth0): a vault served with
``--insecure-plaintext`` on 0.0.0.0 and called through it sees a peer that is not
loopback, as a caller on another host would be. Tests needing it skip where it is absent.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import sqlite3
import stat
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from types import ModuleType

import grpc
import pytest

from vault.v1 import seal_service_pb2, seal_service_pb2_grpc, token_service_pb2_grpc, types_pb2
from vault.v1 import token_service_pb2 as pb

from .support import REPO, assert_one_line_failure, bearer, error_reason, run_vaultctl

pytestmark = pytest.mark.slow

REMOTE_IP = "192.0.2.2"
CARD = "4111111111111111"


def _has_remote_ip() -> bool:
    try:
        with socket.socket() as s:
            s.bind((REMOTE_IP, 0))
    except OSError:
        return False
    return True


needs_remote_ip = pytest.mark.skipif(not _has_remote_ip(), reason=f"no {REMOTE_IP} here")


def _load_certs_module() -> ModuleType:
    path = REPO / "tests" / "api" / "mtls_certs.py"
    spec = importlib.util.spec_from_file_location("mtls_certs_transport", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


mtls_certs = _load_certs_module()


def _dev_vault(launcher, data: Path) -> str:
    """A data dir a --dev run created (master key, dev caller); its dev API key."""
    vault = launcher.start(data, metrics_listen=None)
    key = vault.api_key
    assert key is not None
    assert vault.terminate() == 0
    return key


@pytest.fixture
def remote_vault(launcher, tmp_path):
    """A vault in plaintext on 0.0.0.0 (--insecure-plaintext) with a gRPC and an HTTP port."""
    data = tmp_path / "data"
    key = _dev_vault(launcher, data)
    vault = launcher.start(
        data,
        dev=False,
        listen="0.0.0.0:0",
        metrics_listen=None,
        extra_args=["--insecure-plaintext", "--http-listen", "0.0.0.0:0"],
    )
    return vault, key


def _tokenize(target: str, key: str) -> pb.TokenizeResponse:
    with grpc.insecure_channel(target) as channel:
        stub = token_service_pb2_grpc.TokenServiceStub(channel)
        request = pb.TokenizeRequest(kind=types_pb2.DATA_KIND_PAN, text=CARD)
        return stub.Tokenize(request, metadata=bearer(key), timeout=10)


@needs_remote_ip
def test_a_credential_over_plaintext_from_another_host_is_refused(remote_vault):
    vault, key = remote_vault
    assert "insecure_plaintext" in vault.stderr()  # the warning at start
    # Loopback: served.
    assert _tokenize(f"127.0.0.1:{vault.port}", key).token
    # The same call through the non-loopback address: refused before the key is used.
    with pytest.raises(grpc.RpcError) as err:
        _tokenize(f"{REMOTE_IP}:{vault.port}", key)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(err.value) == "TLS_REQUIRED"
    # A custodian share is refused the same way, whatever the seal state.
    with grpc.insecure_channel(f"{REMOTE_IP}:{vault.port}") as channel:
        seal = seal_service_pb2_grpc.SealServiceStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            seal.SubmitUnsealShare(
                seal_service_pb2.SubmitUnsealShareRequest(share="vault-share-v1:1:00:00"),
                metadata=bearer(key),
                timeout=10,
            )
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(err.value) == "TLS_REQUIRED"
    assert vault.running()


@needs_remote_ip
def test_the_http_port_refuses_a_credential_over_plaintext_from_another_host(remote_vault):
    vault, key = remote_vault
    line = next(ln for ln in vault.stdout().splitlines() if ln.startswith("HTTP/JSON on "))
    port = int(line.rsplit(":", 1)[1])
    body = json.dumps({"kind": "DATA_KIND_PAN", "text": CARD}).encode()

    def post(host: str) -> tuple[int, dict]:
        request = urllib.request.Request(
            f"http://{host}:{port}/vault.v1.TokenService/Tokenize",
            data=body,
            headers={"content-type": "application/json", "authorization": f"Bearer {key}"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    status, answer = post("127.0.0.1")
    assert status == 200, answer
    assert answer["token"]
    status, answer = post(REMOTE_IP)
    assert status == 400, answer
    assert answer["code"] == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert any(d.get("reason") == "TLS_REQUIRED" for d in answer.get("details", []))


def _serve_fails(data: Path, *args: object) -> str:
    result = run_vaultctl("serve", "--data-dir", data, "--metrics-listen", "", *args, timeout=30)
    return assert_one_line_failure(result)


def test_serve_refuses_a_non_loopback_listen_without_tls(tmp_path):
    data = tmp_path / "data"
    assert run_vaultctl("keys", "init", "--data-dir", data).returncode == 0
    line = _serve_fails(data, "--listen", "0.0.0.0:0")
    assert "TLS" in line
    line = _serve_fails(data, "--listen", "127.0.0.1:0", "--http-listen", "0.0.0.0:0")
    assert "TLS" in line


def test_dev_is_refused_off_loopback_and_on_a_store_it_did_not_create(launcher, tmp_path):
    line = _serve_fails(tmp_path / "d1", "--dev", "--listen", "0.0.0.0:0")
    assert "loopback" in line
    # A vault made without --dev (keys init) is not served with --dev.
    real = tmp_path / "real"
    assert run_vaultctl("keys", "init", "--data-dir", real).returncode == 0
    line = _serve_fails(real, "--dev", "--listen", "127.0.0.1:0")
    assert "this store was not" in line
    # A store --dev created is served again with --dev.
    data = tmp_path / "dev"
    _dev_vault(launcher, data)
    again = launcher.start(data, metrics_listen=None)
    assert again.running()


def test_the_dev_caller_is_audited_and_files_are_the_owners_only(launcher, tmp_path):
    data = tmp_path / "data"
    vault = launcher.start(data, metrics_listen=None)
    assert _tokenize(vault.target, vault.api_key or "").token
    # No core dumps for the server process.
    limits = Path(f"/proc/{vault.pid}/limits").read_text()
    core = next(ln for ln in limits.splitlines() if ln.startswith("Max core file size"))
    assert core.split()[4:6] == ["0", "0"], core
    assert vault.terminate() == 0
    with sqlite3.connect(data / "vault.db") as conn:
        rows = conn.execute("SELECT caller, action, outcome, detail FROM audit_log").fetchall()
    dev = [r for r in rows if r[1] == "caller.add"]
    assert len(dev) == 1
    assert dev[0][0] == "vaultctl serve --dev"
    assert dict(json.loads(dev[0][3]))["name"] == "dev"
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    for path in data.iterdir():
        if path.is_file():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name


def test_a_group_readable_data_dir_is_refused(launcher, tmp_path):
    data = tmp_path / "data"
    _dev_vault(launcher, data)
    data.chmod(0o750)
    line = _serve_fails(data, "--dev", "--listen", "127.0.0.1:0")
    assert "chmod 700" in line
    listed = run_vaultctl("callers", "list", "--data-dir", data)
    assert "chmod 700" in assert_one_line_failure(listed)


@pytest.mark.parametrize(
    "command",
    [
        ("health", "--address", f"{REMOTE_IP}:50051"),
        ("unseal", "--addr", f"{REMOTE_IP}:50051"),
    ],
)
def test_vaultctl_refuses_plaintext_to_a_non_loopback_address(command):
    line = assert_one_line_failure(run_vaultctl(*command, stdin=""))
    assert "--insecure" in line


def test_the_keys_scope_is_for_the_operator_tenant_only(launcher, tmp_path):
    data = tmp_path / "data"
    _dev_vault(launcher, data)
    refused = run_vaultctl(
        "callers", "add", "rotator", "--data-dir", data, "--tenant", "default", "--scopes", "keys"
    )
    assert "operator tenant" in assert_one_line_failure(refused)
    ok = run_vaultctl(
        "callers", "add", "rotator", "--data-dir", data, "--tenant", "ops", "--scopes", "keys"
    )
    assert ok.returncode == 0, ok.stderr


def test_a_cn_reading_like_a_uri_never_names_the_uri_caller(launcher, tmp_path):
    ca = mtls_certs.make_ca("transport test CA")
    d = tmp_path / "tls"
    server = mtls_certs.issue(ca, "localhost", dns=("localhost",), ips=("127.0.0.1",), server=True)
    server_cert, server_key = server.write(d, "server")
    # No SAN URI, a subject CN that spells the bound URI.
    impostor = mtls_certs.issue(ca, mtls_certs.SPIFFE_ID)
    client_cert, client_key = impostor.write(d, "impostor")
    (d / "ca.crt").write_bytes(ca.pem)
    data = tmp_path / "data"
    tls_args = ["--tls-cert", server_cert, "--tls-key", server_key, "--client-ca", d / "ca.crt"]
    vault = launcher.start(data, metrics_listen=None, extra_args=[str(a) for a in tls_args])
    added = run_vaultctl(
        "callers", "add", "checkout", "--data-dir", data, "--tenant", "default",
        "--scopes", "tokenize", "--cert-uri", mtls_certs.SPIFFE_ID,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    creds = grpc.ssl_channel_credentials(ca.pem, client_key.read_bytes(), client_cert.read_bytes())
    with grpc.secure_channel(vault.target, creds) as channel:
        stub = token_service_pb2_grpc.TokenServiceStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            stub.Tokenize(pb.TokenizeRequest(kind=types_pb2.DATA_KIND_PAN, text=CARD), timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


HARDENED = """
import resource, sys
from vault.cli import main as m
code = m.main(sys.argv[1:])
print("CORE", *resource.getrlimit(resource.RLIMIT_CORE), "UMASK", oct(__import__("os").umask(0)))
sys.exit(code)
"""


@pytest.mark.parametrize(
    "command",
    [
        ("keys", "init"),
        ("keys", "status"),
        ("callers", "add", "x", "--tenant", "ops", "--scopes", "keys"),
        ("subjects", "export", "nobody", "--tenant", "default", "--purpose", "test"),
        ("keys", "rotate"),
    ],
)
def test_commands_holding_keys_or_exports_run_without_core_dumps(launcher, tmp_path, command):
    data = tmp_path / "data"
    if command[:2] != ("keys", "init"):
        _dev_vault(launcher, data)
    argv = [*command, "--data-dir", str(data)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("VAULT_")}
    done = subprocess.run(
        [sys.executable, "-c", HARDENED, *argv],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert "CORE 0 0 UMASK 0o77" in done.stdout, (done.stdout, done.stderr)
