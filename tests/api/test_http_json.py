"""HTTP/JSON (``--http-listen``) through a real HTTP client against a real server: the
same methods, credentials, errors and audit as gRPC."""

from __future__ import annotations

import json
import ssl

import httpx
import pytest
from api_helpers import PURPOSE
from mtls_certs import make_cert_set
from test_audit import audit_rows

PAN = "4111111111111111"
TOKENIZE = "/vault.v1.TokenService/Tokenize"
DETOKENIZE = "/vault.v1.TokenService/Detokenize"


@pytest.fixture
async def vault(vault_factory):
    return await vault_factory(http_listen="127.0.0.1:0")


@pytest.fixture
async def http(vault):
    assert vault.server.http_port > 0
    base = f"http://127.0.0.1:{vault.server.http_port}"
    headers = {"authorization": f"Bearer {vault.key}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=10) as client:
        yield client


def details(body: dict, suffix: str) -> list[dict]:
    return [d for d in body.get("details", []) if d["@type"].endswith(suffix)]


async def test_tokenize_then_detokenize_with_a_purpose(vault, http):
    resp = await http.post(TOKENIZE, json={"kind": "DATA_KIND_PAN", "text": PAN})
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "application/json"
    token = resp.json()["token"]
    assert token
    assert PAN not in resp.text
    shown = await http.post(DETOKENIZE, json={"token": token, "purpose": PURPOSE})
    assert shown.status_code == 200, shown.text
    assert shown.json()["text"] == PAN
    assert shown.json()["kind"] == "DATA_KIND_PAN"
    # The same token answers over gRPC: one vault behind both ports.
    assert vault.count_tokens() == 1


async def test_a_bad_credential_is_401_unauthenticated_and_audited(vault, http):
    resp = await http.post(
        TOKENIZE,
        json={"kind": "DATA_KIND_PAN", "text": PAN},
        headers={"authorization": "Bearer vk_not.a-real-key"},
    )
    assert resp.status_code == 401
    body = resp.json()
    assert body["code"] == 16  # UNAUTHENTICATED
    assert details(body, "ErrorInfo")[0]["domain"] == "vault"
    assert PAN not in resp.text
    # The first refusal of each (peer, reason, method) is recorded at once, as on gRPC.
    refusals = [r for r in audit_rows(vault) if r["action"] == "auth.authenticate"]
    assert [(r["outcome"], r["reason"], r["detail"]["method"]) for r in refusals] == [
        ("denied", "BAD_CREDENTIAL", "Tokenize")
    ]
    assert refusals[0]["peer"] == "ipv4:127.0.0.1"
    assert "not.a-real-key" not in json.dumps(refusals)


async def test_missing_credential_is_401_and_the_body_is_not_read(http):
    resp = await http.post(
        TOKENIZE,
        content=b"{not json",
        headers={"authorization": "", "content-type": "application/json"},
    )
    # Refused for the credential, not for the undecodable body.
    assert resp.status_code == 401
    assert resp.json()["code"] == 16


async def test_invalid_argument_names_the_field(http):
    resp = await http.post(TOKENIZE, json={"kind": "DATA_KIND_PAN", "text": "4111111111111112"})
    assert resp.status_code == 400
    body = resp.json()
    assert body["code"] == 3  # INVALID_ARGUMENT
    violations = details(body, "BadRequest")[0]["fieldViolations"]
    assert [v["field"] for v in violations] == ["text"]
    assert details(body, "ErrorInfo")[0]["reason"]
    assert "4111111111111112" not in resp.text


async def test_undecodable_json_is_invalid_argument(http):
    resp = await http.post(
        TOKENIZE, content=b'{"kind": 3, "txet": "x"}', headers={"content-type": "application/json"}
    )
    assert resp.status_code == 400
    assert details(resp.json(), "ErrorInfo")[0]["reason"] == "MALFORMED_REQUEST"


async def test_a_detokenize_writes_its_audit_record(vault, http):
    tokenized = await http.post(TOKENIZE, json={"kind": "DATA_KIND_PAN", "text": PAN})
    token = tokenized.json()["token"]
    resp = await http.post(
        DETOKENIZE,
        json={"token": token, "purpose": PURPOSE},
        headers={"x-request-id": "http-refund-42"},
    )
    assert resp.status_code == 200
    reveals = [r for r in audit_rows(vault) if r["request_id"] == "http-refund-42"]
    assert len(reveals) == 1
    assert reveals[0]["tokens"] == [token]
    assert reveals[0]["purpose"] == PURPOSE
    assert reveals[0]["caller"] == "dev"
    assert reveals[0]["peer"].startswith("ipv4:127.0.0.1:")
    assert PAN not in json.dumps(audit_rows(vault))


@pytest.mark.parametrize(
    ("method", "path", "content_type", "status"),
    [
        ("POST", "/vault.v1.TokenService/NoSuchMethod", "application/json", 501),
        ("GET", TOKENIZE, "application/json", 501),
        ("POST", TOKENIZE, "text/plain", 400),
        # Streams are gRPC only.
        ("POST", "/vault.v1.TokenService/TokenizeStream", "application/json", 501),
    ],
)
async def test_what_is_not_a_unary_json_call_is_refused(http, method, path, content_type, status):
    resp = await http.request(method, path, content=b"{}", headers={"content-type": content_type})
    assert resp.status_code == status
    assert resp.json()["code"] in {3, 12}


async def test_no_cors(http):
    resp = await http.options(
        TOKENIZE,
        headers={"origin": "https://shop.example", "access-control-request-method": "POST"},
    )
    assert "access-control-allow-origin" not in resp.headers


async def test_a_body_over_the_message_limit_is_refused(vault_factory):
    vault = await vault_factory(http_listen="127.0.0.1:0", max_message_bytes=1024)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{vault.server.http_port}") as c:
        resp = await c.post(
            TOKENIZE,
            json={"kind": "DATA_KIND_EMAIL", "text": "a" * 4096},
            headers={"authorization": f"Bearer {vault.key}"},
        )
    assert resp.status_code == 429
    assert resp.json()["code"] == 8


async def test_the_http_port_speaks_mtls_when_the_grpc_port_does(vault_factory, tmp_path):
    certs = make_cert_set()
    d = tmp_path / "tls"
    cert, key = certs.server.write(d, "server")
    client_cert, client_key = certs.spiffe.write(d, "client")
    ca = d / "ca.crt"
    ca.write_bytes(certs.ca.pem)
    vault = await vault_factory(
        http_listen="127.0.0.1:0", tls_cert=str(cert), tls_key=str(key), client_ca=str(ca)
    )
    url = f"https://localhost:{vault.server.http_port}{TOKENIZE}"
    body = {"kind": "DATA_KIND_PAN", "text": PAN}
    headers = {"authorization": f"Bearer {vault.key}"}
    with_cert = ssl.create_default_context(cafile=str(ca))
    with_cert.load_cert_chain(client_cert, client_key)
    async with httpx.AsyncClient(verify=with_cert) as client:
        resp = await client.post(url, json=body, headers=headers)
    assert resp.status_code == 200
    assert resp.json()["token"]
    # No client certificate: the handshake fails, as on the gRPC port.
    async with httpx.AsyncClient(verify=ssl.create_default_context(cafile=str(ca))) as client:
        with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
            await client.post(url, json=body, headers=headers)
    # Plain HTTP is not served on a TLS port.
    async with httpx.AsyncClient() as client:
        with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError, httpx.ConnectError)):
            await client.post(url.replace("https", "http"), json=body, headers=headers)
