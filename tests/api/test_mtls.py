"""mTLS: callers named by their client certificate, with certificates made at test time.

The server runs with --tls-cert/--tls-key/--client-ca. A caller bound to a SPIFFE URI
(or, failing a URI, a subject CN) works with no API key; an untrusted, expired or absent
client certificate never gets past the handshake (UNAVAILABLE) and the server keeps
serving; a valid certificate nobody bound is UNAUTHENTICATED and audited; an API key
over TLS still works and wins over the certificate.
"""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest
from api_helpers import PURPOSE, assert_reason, bearer, expect_code, tokenize_request
from grpc_health.v1 import health_pb2, health_pb2_grpc
from mtls_certs import CN_ONLY, SPIFFE_ID, UNBOUND_ID, CertSet, Pair, make_cert_set

from vault.auth import apikeys
from vault.auth.mtls import certificate_identity, load_tls_material
from vault.config import Config
from vault.errors import FailedPreconditionError
from vault.server import VaultServer
from vault.storage.base import CallerRow
from vault.v1 import token_service_pb2 as pb
from vault.v1 import token_service_pb2_grpc

CARD = "4111111111111111"


@pytest.fixture(scope="module")
def certs() -> CertSet:
    return make_cert_set()


@pytest.fixture
def tls_files(certs, tmp_path) -> dict[str, str]:
    d = tmp_path / "tls"
    cert, key = certs.server.write(d, "server")
    ca = d / "ca.crt"
    ca.write_bytes(certs.ca.pem)
    return {"tls_cert": str(cert), "tls_key": str(key), "client_ca": str(ca)}


@pytest.fixture
async def mtls(vault_factory, tls_files):
    return await vault_factory(**tls_files)


class Client:
    """A secure channel to a vault, with or without a client certificate."""

    def __init__(self, vault, ca: bytes, pair: Pair | None) -> None:
        creds = grpc.ssl_channel_credentials(
            root_certificates=ca,
            private_key=pair.key if pair else None,
            certificate_chain=pair.cert if pair else None,
        )
        self.channel = grpc.aio.secure_channel(f"127.0.0.1:{vault.server.port}", creds)
        self.stub = token_service_pb2_grpc.TokenServiceStub(self.channel)

    async def __aenter__(self) -> token_service_pb2_grpc.TokenServiceStub:
        return self.stub

    async def __aexit__(self, *exc: object) -> None:
        await self.channel.close()


async def bind(
    vault,
    name: str,
    identity: str,
    scopes: tuple[str, ...] = ("tokenize", "detokenize"),
    *,
    expires_at: float | None = None,
) -> None:
    """A caller bound to a typed certificate identity (``uri:…``/``cn:…``), as `callers
    add --cert-uri/--cert-cn` makes it."""
    await vault.server.store.add_caller(
        CallerRow(
            name=name,
            tenant="default",
            scopes=scopes,
            key_id=None,
            key_hash=None,
            created_at=vault.clock.now(),
            expires_at=expires_at,
            revoked_at=None,
            cert_identity=identity,
        )
    )


async def round_trip(stub, md=()) -> None:
    token = (await stub.Tokenize(tokenize_request("PAN", CARD), metadata=md, timeout=10)).token
    resp = await stub.Detokenize(
        pb.DetokenizeRequest(token=token, purpose=PURPOSE), metadata=md, timeout=10
    )
    assert resp.text == CARD


def audit_rows(vault) -> list[dict]:
    rows = vault.sql("SELECT caller, action, outcome, reason, detail FROM audit_log ORDER BY seq")
    return [
        {"caller": c, "action": a, "outcome": o, "reason": r, "detail": dict(json.loads(d))}
        for c, a, o, r, d in rows
    ]


# -- callers named by their certificate ------------------------------------------------


async def test_caller_bound_to_a_spiffe_uri_tokenizes_and_detokenizes(mtls, certs):
    await bind(mtls, "checkout", f"uri:{SPIFFE_ID}")
    async with Client(mtls, certs.ca.pem, certs.spiffe) as stub:
        await round_trip(stub)
    reveals = [r for r in audit_rows(mtls) if r["action"] == "token.reveal"]
    assert [(r["caller"], r["outcome"]) for r in reveals] == [("checkout", "ok")]


async def test_cn_only_certificate_works_when_bound_by_cn(mtls, certs):
    await bind(mtls, "reports", f"cn:{CN_ONLY}")
    async with Client(mtls, certs.ca.pem, certs.cn_only) as stub:
        await round_trip(stub)


async def test_the_san_uri_wins_over_the_cn(mtls, certs):
    # The SPIFFE certificate's CN is bound, its URI is not: the URI is the identity.
    await bind(mtls, "by-cn", "cn:checkout-cn-ignored")
    async with Client(mtls, certs.ca.pem, certs.spiffe) as stub:
        exc = await expect_code(
            stub.Tokenize(tokenize_request("PAN", CARD), timeout=10),
            grpc.StatusCode.UNAUTHENTICATED,
        )
    assert_reason(exc, "UNKNOWN_CERT_IDENTITY")


async def test_scopes_of_a_certificate_caller_are_enforced(mtls, certs):
    await bind(mtls, "checkout", f"uri:{SPIFFE_ID}", ("tokenize",))
    async with Client(mtls, certs.ca.pem, certs.spiffe) as stub:
        token = (await stub.Tokenize(tokenize_request("PAN", CARD), timeout=10)).token
        await expect_code(
            stub.Detokenize(pb.DetokenizeRequest(token=token, purpose=PURPOSE), timeout=10),
            grpc.StatusCode.PERMISSION_DENIED,
        )


@pytest.mark.parametrize("which", ["untrusted", "expired", "none"])
async def test_a_bad_or_missing_client_certificate_fails_the_handshake(mtls, certs, which):
    await bind(mtls, "checkout", f"uri:{SPIFFE_ID}")
    pair = None if which == "none" else getattr(certs, which)
    async with Client(mtls, certs.ca.pem, pair) as stub:
        await expect_code(
            stub.Tokenize(tokenize_request("PAN", CARD), metadata=mtls.md, timeout=10),
            grpc.StatusCode.UNAVAILABLE,
        )
    # Nothing got in (no handler ran, nothing was stored) and other callers are served.
    assert mtls.count_tokens() == 0
    async with Client(mtls, certs.ca.pem, certs.spiffe) as stub:
        await round_trip(stub)


async def test_a_valid_certificate_nobody_bound_is_unauthenticated_and_audited(mtls, certs):
    async with Client(mtls, certs.ca.pem, certs.unbound) as stub:
        exc = await expect_code(
            stub.Tokenize(tokenize_request("PAN", CARD), timeout=10),
            grpc.StatusCode.UNAUTHENTICATED,
        )
        assert_reason(exc, "UNKNOWN_CERT_IDENTITY")
    refusals = [r for r in audit_rows(mtls) if r["action"] == "auth.authenticate"]
    assert len(refusals) == 1
    assert refusals[0]["outcome"] == "denied"
    assert refusals[0]["reason"] == "UNKNOWN_CERT_IDENTITY"
    assert refusals[0]["detail"]["cert_identity"] == UNBOUND_ID
    assert mtls.count_tokens() == 0


async def test_revoked_and_expired_certificate_callers_are_refused(mtls, certs, monkeypatch):
    monkeypatch.setattr(apikeys, "CACHE_SECONDS", 0.0)
    await bind(mtls, "checkout", f"uri:{SPIFFE_ID}")
    await bind(mtls, "reports", f"cn:{CN_ONLY}", expires_at=mtls.clock.now() + 60)
    async with Client(mtls, certs.ca.pem, certs.spiffe) as stub:
        await round_trip(stub)
        await mtls.server.store.revoke_caller("checkout", mtls.clock.now())
        exc = await expect_code(
            stub.Tokenize(tokenize_request("PAN", CARD), timeout=10),
            grpc.StatusCode.UNAUTHENTICATED,
        )
        assert_reason(exc, "REVOKED_CREDENTIAL")
    async with Client(mtls, certs.ca.pem, certs.cn_only) as stub:
        await round_trip(stub)
        mtls.clock.advance(61)
        exc = await expect_code(
            stub.Tokenize(tokenize_request("PAN", CARD), timeout=10),
            grpc.StatusCode.UNAUTHENTICATED,
        )
        assert_reason(exc, "EXPIRED_CREDENTIAL")


async def test_a_newly_bound_identity_is_seen_once_the_cache_lapses(mtls, certs, monkeypatch):
    monkeypatch.setattr(apikeys, "CACHE_SECONDS", 0.0)
    async with Client(mtls, certs.ca.pem, certs.unbound) as stub:
        await expect_code(
            stub.Tokenize(tokenize_request("PAN", CARD), timeout=10),
            grpc.StatusCode.UNAUTHENTICATED,
        )
        await bind(mtls, "stranger", f"uri:{UNBOUND_ID}")
        await round_trip(stub)


# -- API keys over TLS -------------------------------------------------------------------


async def test_a_bearer_key_over_mtls_works_and_wins_over_the_certificate(mtls, certs):
    await bind(mtls, "checkout", f"uri:{SPIFFE_ID}", ("tokenize",))
    async with Client(mtls, certs.ca.pem, certs.spiffe) as stub:
        # The dev key may detokenize; the certificate's caller may not: the key is used.
        await round_trip(stub, mtls.md)
        # A bad key is refused even though the certificate names a caller.
        exc = await expect_code(
            stub.Tokenize(tokenize_request("PAN", CARD), metadata=bearer("garbage"), timeout=10),
            grpc.StatusCode.UNAUTHENTICATED,
        )
        assert_reason(exc, "BAD_CREDENTIAL")


async def test_server_only_tls_takes_api_keys_and_no_client_certificate(
    vault_factory, tls_files, certs
):
    vault = await vault_factory(tls_cert=tls_files["tls_cert"], tls_key=tls_files["tls_key"])
    async with Client(vault, certs.ca.pem, None) as stub:
        await round_trip(stub, vault.md)
        exc = await expect_code(
            stub.Tokenize(tokenize_request("PAN", CARD), timeout=10),
            grpc.StatusCode.UNAUTHENTICATED,
        )
        assert_reason(exc, "NO_CREDENTIAL")
    # A plaintext client cannot talk to a TLS server.
    await expect_code(
        vault.stub.Tokenize(tokenize_request("PAN", CARD), metadata=vault.md, timeout=5),
        grpc.StatusCode.UNAVAILABLE,
    )


async def test_health_over_mtls_with_a_client_certificate(mtls, certs):
    creds = grpc.ssl_channel_credentials(certs.ca.pem, certs.cn_only.key, certs.cn_only.cert)
    async with grpc.aio.secure_channel(f"127.0.0.1:{mtls.server.port}", creds) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=10
        )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


# -- configuration -------------------------------------------------------------------------


def test_identity_is_the_first_san_uri_else_the_cn():
    assert certificate_identity(["spiffe://a/b", "spiffe://c"], ["cn"]) == "spiffe://a/b"
    assert certificate_identity([], ["cn"]) == "cn"
    assert certificate_identity([], []) is None


def test_tls_settings_must_come_together(tls_files):
    with pytest.raises(FailedPreconditionError) as err:
        load_tls_material("", "", tls_files["client_ca"])
    assert err.value.reason == "TLS_CONFIG"
    with pytest.raises(FailedPreconditionError) as err:
        load_tls_material(tls_files["tls_cert"], "", "")
    assert err.value.reason == "TLS_CONFIG"
    assert load_tls_material("", "", "") is None
    material = load_tls_material(**tls_files)
    assert material is not None
    assert material.client_ca is not None
    assert "BEGIN" not in repr(material)


def test_bad_tls_files_are_refused(tls_files, certs, tmp_path):
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"not a certificate")
    garbage.chmod(0o600)
    other_cert, _ = certs.cn_only.write(tmp_path / "other", "client")
    cases = {
        "TLS_FILE_UNREADABLE": {**tls_files, "tls_cert": str(tmp_path / "missing.crt")},
        "TLS_FILE_INVALID": {**tls_files, "client_ca": str(garbage)},
    }
    for reason, files in cases.items():
        with pytest.raises(FailedPreconditionError) as err:
            load_tls_material(**files)
        assert err.value.reason == reason
    for files in ({**tls_files, "tls_key": str(garbage)}, {**tls_files, "tls_cert": other_cert}):
        with pytest.raises(FailedPreconditionError) as err:
            load_tls_material(**files)
        assert err.value.reason == "TLS_FILE_INVALID"


def test_a_tls_key_readable_by_others_is_refused(tls_files):
    Path(tls_files["tls_key"]).chmod(0o640)
    with pytest.raises(FailedPreconditionError) as err:
        load_tls_material(**tls_files)
    assert err.value.reason == "TLS_KEY_PERMISSIONS"
    assert "chmod 600" in str(err.value)


async def test_the_server_refuses_to_start_with_bad_tls_settings(tmp_path, tls_files):
    config = Config(
        data_dir=tmp_path / "data",
        listen="127.0.0.1:0",
        metrics_listen="",
        dev=True,
        client_ca=tls_files["client_ca"],
    )
    server = VaultServer(config)
    with pytest.raises(FailedPreconditionError) as err:
        await server.start()
    assert err.value.reason == "TLS_CONFIG"
    assert not config.database_path.exists()
