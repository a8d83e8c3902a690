"""mTLS end to end: `vaultctl serve --tls-cert --tls-key --client-ca` as a process,
`vaultctl callers add --cert-uri`, a caller named by its certificate, and
`vaultctl health` over mTLS."""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path
from types import ModuleType

import grpc
import pytest

from vault.v1 import token_service_pb2 as pb
from vault.v1 import token_service_pb2_grpc, types_pb2

from .support import API_KEY, PURPOSE, REPO, assert_one_line_failure, error_reason, run_vaultctl

pytestmark = pytest.mark.slow

CARD = "4111111111111111"


def _load_certs_module() -> ModuleType:
    # Shared with the API tests, which import it by name from their own directory.
    path = REPO / "tests" / "api" / "mtls_certs.py"
    spec = importlib.util.spec_from_file_location("mtls_certs_e2e", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


mtls_certs = _load_certs_module()


@pytest.fixture(scope="module")
def tls(tmp_path_factory) -> dict[str, Path]:
    certs = mtls_certs.make_cert_set()
    d = tmp_path_factory.mktemp("tls")
    server_cert, server_key = certs.server.write(d, "server")
    client_cert, client_key = certs.spiffe.write(d, "client")
    rogue_cert, rogue_key = certs.untrusted.write(d, "rogue")
    (d / "ca.crt").write_bytes(certs.ca.pem)
    return {
        "ca": d / "ca.crt",
        "server_cert": server_cert,
        "server_key": server_key,
        "client_cert": client_cert,
        "client_key": client_key,
        "rogue_cert": rogue_cert,
        "rogue_key": rogue_key,
    }


def _serve_args(tls: dict[str, Path]) -> list[str]:
    return [
        "--tls-cert",
        str(tls["server_cert"]),
        "--tls-key",
        str(tls["server_key"]),
        "--client-ca",
        str(tls["ca"]),
    ]


def _stub(target: str, tls: dict[str, Path], cert: str = "client"):
    creds = grpc.ssl_channel_credentials(
        tls["ca"].read_bytes(),
        tls[f"{cert}_key"].read_bytes(),
        tls[f"{cert}_cert"].read_bytes(),
    )
    channel = grpc.secure_channel(target, creds)
    return channel, token_service_pb2_grpc.TokenServiceStub(channel)


def test_a_caller_bound_by_certificate_identity_uses_the_vault(launcher, tmp_path, tls):
    data = tmp_path / "data"
    vault = launcher.start(data, extra_args=_serve_args(tls))

    added = run_vaultctl(
        "callers",
        "add",
        "checkout",
        "--data-dir",
        data,
        "--tenant",
        "default",
        "--scopes",
        "tokenize,detokenize",
        "--cert-uri",
        mtls_certs.SPIFFE_ID,
    )
    assert added.returncode == 0, added.stderr
    assert mtls_certs.SPIFFE_ID in added.stdout
    assert API_KEY.search(added.stdout) is None  # no key is minted for a certificate

    listed = run_vaultctl("callers", "list", "--data-dir", data, "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {c["name"]: c for c in json.loads(listed.stdout)["callers"]}
    assert rows["checkout"]["cert_identity"] == mtls_certs.SPIFFE_ID
    assert rows["dev"]["cert_identity"] is None
    text = run_vaultctl("callers", "list", "--data-dir", data)
    assert f"cert:{mtls_certs.SPIFFE_ID}" in text.stdout

    channel, stub = _stub(vault.target, tls)
    with channel:
        token = stub.Tokenize(
            pb.TokenizeRequest(kind=types_pb2.DATA_KIND_PAN, text=CARD), timeout=10
        ).token
        resp = stub.Detokenize(pb.DetokenizeRequest(token=token, purpose=PURPOSE), timeout=10)
        assert resp.text == CARD

    # A client certificate from another CA never gets past the handshake...
    channel, stub = _stub(vault.target, tls, "rogue")
    with channel, pytest.raises(grpc.RpcError) as err:
        stub.Tokenize(pb.TokenizeRequest(kind=types_pb2.DATA_KIND_PAN, text=CARD), timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    # ... and the server keeps serving.
    assert vault.running()

    # Revoked: refused within the cache lifetime (2 s), without a restart.
    assert run_vaultctl("callers", "revoke", "checkout", "--data-dir", data).returncode == 0
    channel, stub = _stub(vault.target, tls)
    with channel:
        deadline = time.monotonic() + 10
        refused: grpc.RpcError | None = None
        while refused is None:
            try:
                stub.Tokenize(
                    pb.TokenizeRequest(kind=types_pb2.DATA_KIND_PAN, text=CARD), timeout=10
                )
            except grpc.RpcError as exc:
                refused = exc
            else:
                assert time.monotonic() < deadline, "revocation not seen"
                time.sleep(0.2)
    assert refused.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_reason(refused) == "REVOKED_CREDENTIAL"

    # Binding the same identity twice is refused in one line.
    again = run_vaultctl(
        "callers",
        "add",
        "checkout-2",
        "--data-dir",
        data,
        "--tenant",
        "default",
        "--scopes",
        "tokenize",
        "--cert-identity",
        f"uri:{mtls_certs.SPIFFE_ID}",
    )
    assert_one_line_failure(again)


def test_health_over_mtls(launcher, tmp_path, tls):
    vault = launcher.start(tmp_path / "data", metrics_listen=None, extra_args=_serve_args(tls))
    ok = run_vaultctl(
        "health",
        "--address",
        vault.target,
        "--tls-ca",
        tls["ca"],
        "--tls-cert",
        tls["client_cert"],
        "--tls-key",
        tls["client_key"],
    )
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == "SERVING"
    # Without a client certificate the handshake refuses the probe; plaintext fails too.
    no_cert = run_vaultctl("health", "--address", vault.target, "--tls-ca", tls["ca"])
    assert "UNAVAILABLE" in assert_one_line_failure(no_cert)
    plaintext = run_vaultctl("health", "--address", vault.target, "--timeout", "2")
    assert_one_line_failure(plaintext)
    assert vault.running()


def _serve_fails(tmp_path: Path, *args: object) -> str:
    result = run_vaultctl(
        "serve",
        "--data-dir",
        tmp_path / "data",
        "--dev",
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
        *args,
        timeout=30,
    )
    return assert_one_line_failure(result)


def test_serve_refuses_bad_tls_settings_in_one_line(tmp_path, tls):
    assert "--client-ca" in _serve_fails(tmp_path, "--client-ca", tls["ca"])
    missing = _serve_fails(
        tmp_path, "--tls-cert", tmp_path / "nope.crt", "--tls-key", tls["server_key"]
    )
    assert "cannot be read" in missing
    garbage = tmp_path / "garbage.crt"
    garbage.write_text("not a certificate")
    invalid = _serve_fails(tmp_path, "--tls-cert", garbage, "--tls-key", tls["server_key"])
    assert "no PEM certificate" in invalid
    open_key = tmp_path / "open.key"
    open_key.write_bytes(tls["server_key"].read_bytes())
    open_key.chmod(0o644)
    perms = _serve_fails(tmp_path, "--tls-cert", tls["server_cert"], "--tls-key", open_key)
    assert "chmod 600" in perms
