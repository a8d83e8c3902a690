"""TLS in deploy/: deploy/compose/make-certs.py writes a CA, the vault's certificate and
the ops and checkout client certificates; compose serves TLS (and mTLS) with them; and a
real `vaultctl serve`, started with the image's and compose's VAULT_* settings (the TLS
paths pointing at the generated files, loopback port 0), answers the compose healthcheck
and the Kubernetes probe commands over mTLS, refuses a plaintext client, and serves the
checkout caller bound to its certificate's URI as deploy/README.md says."""

from __future__ import annotations

import ipaddress
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from deploy_helpers import (
    COMPOSE,
    DEPLOY,
    KUBERNETES,
    MAKE_CERTS,
    effective_config,
    healthcheck,
    image_env,
    make_certs,
    mtls_credentials,
    relocated,
    vaultctl_args,
    yaml_document,
    yaml_documents,
)

from vault.auth.transport import TLS_REQUIRED
from vault.cli.main import _health
from vault.errors import FailedPreconditionError
from vault.server import TOKEN_SERVICE
from vault.v1 import token_service_pb2 as pb
from vault.v1 import token_service_pb2_grpc
from vault.wiring import check_listen

VAULTCTL = Path(sys.executable).parent / "vaultctl"
LISTENING = re.compile(r"^vault listening on [^\s:]+:(\d+)$", re.MULTILINE)
STARTUP_SECONDS = 20.0
CLIENTS = {"ops", "checkout"}
_CHECKOUT_FLAGS = ("--tenant", "shop1", "--scopes", "tokenize", "--cert-uri")


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _sans(cert: x509.Certificate) -> x509.SubjectAlternativeName:
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value


def _usages(cert: x509.Certificate) -> set[x509.ObjectIdentifier]:
    return set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


# -- make-certs.py ------------------------------------------------------------------------


def test_make_certs_writes_a_ca_a_server_and_two_client_certificates(tmp_path):
    certs = make_certs(tmp_path / "certs")
    names = {p.name for p in certs.iterdir()}
    assert names == {"ca.crt", "tls.crt", "tls.key"} | {
        f"{c}.{ext}" for c in CLIENTS for ext in ("crt", "key")
    }
    for key in certs.glob("*.key"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key.name
    assert not any("PRIVATE" in (certs / n).read_text() for n in names if n.endswith(".crt"))
    ca = _cert(certs / "ca.crt")
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca

    server = _cert(certs / "tls.crt")
    server.verify_directly_issued_by(ca)
    sans = _sans(server)
    assert {"vault", "vault-1", "vault-2", "localhost"} <= set(
        sans.get_values_for_type(x509.DNSName)
    )
    assert ipaddress.ip_address("127.0.0.1") in sans.get_values_for_type(x509.IPAddress)
    # Its own client certificate too: the healthcheck presents it to the mTLS port.
    assert {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH} <= _usages(server)

    for client in CLIENTS:
        cert = _cert(certs / f"{client}.crt")
        cert.verify_directly_issued_by(ca)
        uris = _sans(cert).get_values_for_type(x509.UniformResourceIdentifier)
        assert uris == [f"spiffe://payment-vault.local/{client}"]
        assert _usages(cert) == {ExtendedKeyUsageOID.CLIENT_AUTH}


def test_make_certs_refuses_to_overwrite(tmp_path):
    certs = make_certs(tmp_path / "certs")
    before = (certs / "tls.key").read_bytes()
    again = subprocess.run(
        [sys.executable, str(MAKE_CERTS), str(certs)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert again.returncode == 1
    assert "exists" in again.stderr
    assert (certs / "tls.key").read_bytes() == before


# -- compose ------------------------------------------------------------------------------


def _compose_vaults() -> dict[str, dict[str, Any]]:
    services = yaml_document(COMPOSE)["services"]
    return {
        name: svc
        for name, svc in services.items()
        if svc.get("image") == "payment-vault:local" and "entrypoint" not in svc
    }


def _mount(svc: dict[str, Any], container_dir: str) -> Path:
    for volume in svc["volumes"]:
        host, target = volume.split(":")[:2]
        if target == container_dir:
            return (DEPLOY / host).resolve()
    pytest.fail(f"nothing is mounted at {container_dir}")


def test_compose_serves_tls_with_the_files_make_certs_writes(tmp_path):
    generated = {p.name for p in make_certs(tmp_path / "certs").iterdir()}
    services = yaml_document(COMPOSE)["services"]
    certs_job = services["vault-certs"]
    assert certs_job["entrypoint"][0] == "python"
    script, out_dir = certs_job["entrypoint"][1:]
    assert _mount(certs_job, script) == MAKE_CERTS.resolve()
    for name, svc in _compose_vaults().items():
        env = image_env() | svc["environment"]
        assert "VAULT_INSECURE_PLAINTEXT" not in env, name
        tls_dir = Path(env["VAULT_TLS_CERT"]).parent
        # The vaults read the directory vault-certs writes.
        assert _mount(svc, str(tls_dir)) == _mount(certs_job, out_dir), name
        for var in ("VAULT_TLS_CERT", "VAULT_TLS_KEY", "VAULT_CLIENT_CA"):
            assert Path(env[var]).parent == tls_dir, (name, var)
            assert Path(env[var]).name in generated, (name, var)
        test = svc["healthcheck"]["test"]
        assert test[:3] == ["CMD", "vaultctl", "health"], name
        args = vaultctl_args(test[2:])
        assert args.handler is _health
        assert args.service == TOKEN_SERVICE
        assert (args.tls_ca, args.tls_cert, args.tls_key) == (
            env["VAULT_CLIENT_CA"],
            env["VAULT_TLS_CERT"],
            env["VAULT_TLS_KEY"],
        ), name


def test_the_image_and_compose_settings_pass_the_servers_plaintext_gate():
    # The check `vaultctl serve` makes before it binds: a non-loopback listen needs TLS.
    configs = {"image": image_env()} | {
        name: image_env() | {k: str(v) for k, v in svc["environment"].items()}
        for name, svc in _compose_vaults().items()
    }
    for name, env in configs.items():
        cfg = effective_config(env)
        assert not cfg.listen.startswith("127."), name
        check_listen(cfg, tls=bool(cfg.tls_cert and cfg.tls_key))
        assert cfg.client_ca, name
    # Without the TLS settings the same image would not start: the gate has teeth.
    bare = {k: v for k, v in image_env().items() if not k.startswith(("VAULT_TLS", "VAULT_CLIENT"))}
    with pytest.raises(FailedPreconditionError) as refused:
        check_listen(effective_config(bare), tls=False)
    assert refused.value.reason == TLS_REQUIRED


# -- a real server as the container runs it --------------------------------------------------


def _wait_listening(proc: subprocess.Popen[bytes], stdout: Path, stderr: Path) -> int:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        found = LISTENING.search(stdout.read_text(encoding="utf-8", errors="replace"))
        if found:
            return int(found.group(1))
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    pytest.fail("vaultctl serve did not start: " + stderr.read_text(errors="replace")[-2000:])


def _probe_commands() -> dict[str, list[str]]:
    [deployment] = yaml_documents(KUBERNETES / "deployment.yaml")
    [vault] = [
        c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "vault"
    ]
    return {
        k: vault[k]["exec"]["command"] for k in ("startupProbe", "livenessProbe", "readinessProbe")
    }


def _run(argv: list[str], port: int) -> subprocess.CompletedProcess[str]:
    argv = list(argv)
    argv[argv.index("--address") + 1] = f"127.0.0.1:{port}"
    return subprocess.run(
        [str(VAULTCTL), *argv], capture_output=True, text=True, timeout=30, check=False
    )


def _bind_and_call_as_checkout(certs: Path, port: int, env: dict[str, str]) -> None:
    """deploy/README.md's `callers add --cert-uri` for checkout, then a Tokenize with
    checkout's certificate and no API key; ops' certificate, not bound, is refused."""
    uri = _sans(_cert(certs / "checkout.crt")).get_values_for_type(x509.UniformResourceIdentifier)[
        0
    ]
    readme = (DEPLOY / "README.md").read_text(encoding="utf-8")
    assert f"--cert-uri {uri}" in readme
    added = subprocess.run(
        [str(VAULTCTL), "callers", "add", "checkout", *_CHECKOUT_FLAGS, uri],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert added.returncode == 0, added.stderr
    request = pb.TokenizeRequest(kind="DATA_KIND_TEXT", text="over mTLS")
    with grpc.secure_channel(f"127.0.0.1:{port}", mtls_credentials(certs, "checkout")) as ch:
        assert token_service_pb2_grpc.TokenServiceStub(ch).Tokenize(request, timeout=10).token
    with grpc.secure_channel(f"127.0.0.1:{port}", mtls_credentials(certs, "ops")) as ch:
        with pytest.raises(grpc.RpcError) as refused:
            token_service_pb2_grpc.TokenServiceStub(ch).Tokenize(request, timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_the_container_command_serves_mtls_and_its_probes_pass(tmp_path):
    certs = make_certs(tmp_path / "certs")
    [svc] = list(_compose_vaults().values())[:1]
    # The image's environment, then compose's, the TLS paths pointing at the generated
    # files; loopback port 0 and a temp data dir; SQLite (--dev) stands in for PostgreSQL.
    env = image_env() | {k: str(v) for k, v in svc["environment"].items()}
    env = {k: v for k, v in env.items() if "DATABASE_URL" not in k}
    for var in ("VAULT_TLS_CERT", "VAULT_TLS_KEY", "VAULT_CLIENT_CA"):
        env[var] = str(certs / Path(env[var]).name)
    (tmp_path / "data").mkdir(mode=0o700)
    env |= {
        "VAULT_LISTEN": "127.0.0.1:0",
        "VAULT_METRICS_LISTEN": "127.0.0.1:0",
        "VAULT_DATA_DIR": str(tmp_path / "data"),
    }
    base = {k: v for k, v in os.environ.items() if not k.startswith("VAULT_")}
    stdout, stderr = tmp_path / "stdout", tmp_path / "stderr"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        # The image's entrypoint, `vaultctl serve`; a session of its own for teardown.
        proc = subprocess.Popen(
            [str(VAULTCTL), "serve", "--dev"],
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            env=base | env,
            start_new_session=True,
        )
    try:
        port = _wait_listening(proc, stdout, stderr)
        checks = {"compose": svc["healthcheck"]["test"][2:], "image": healthcheck()[1][1:]}
        checks |= {name: command[1:] for name, command in _probe_commands().items()}
        for name, argv in checks.items():
            done = _run(relocated(argv, certs), port)
            assert (done.returncode, done.stdout.strip()) == (0, "SERVING"), (name, done.stderr)
        # Without a client certificate, or in plaintext, the probe does not pass.
        plain = _run(["health", "--address", "127.0.0.1:0", "--timeout", "3"], port)
        assert plain.returncode != 0
        no_cert = _run(
            ["health", "--address", "x", "--tls-ca", str(certs / "ca.crt"), "--timeout", "3"],
            port,
        )
        assert no_cert.returncode != 0
        _bind_and_call_as_checkout(certs, port, base | env)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
