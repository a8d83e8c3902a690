"""ForwardService/Forward against a real local HTTPS processor (its own test CA, mTLS on
one route): the processor receives the real card; the caller, the logs and the audit
trail never do; refusals come with the right code and send nothing."""

from __future__ import annotations

import json
import logging
from urllib.parse import parse_qs

import grpc
import pytest
from api_helpers import (
    PURPOSE,
    assert_invalid,
    assert_reason,
    error_info,
    expect_code,
    tokenize_request,
)
from mtls_certs import issue, make_ca
from processor_stub import start_processor

from vault.errors import InvalidArgumentError
from vault.forward.routes import RouteAdministration, RouteSecrets, RouteSpec
from vault.secrets import SecretBytes
from vault.v1 import forward_service_pb2 as fpb
from vault.v1 import forward_service_pb2_grpc

PAN = "4242424242424242"
EXPIRY = "12/2030"
CVC = "737"
NAME = 'Jane "JD" O\'Brien & Co'
SECRETS = (PAN, "424242424242", CVC, NAME)
JSON_CT = {"content-type": "application/json"}
FORM_CT = {"content-type": "application/x-www-form-urlencoded"}


@pytest.fixture(scope="module")
def cas():
    return {
        "processor": make_ca("processor test CA"),
        "vault": make_ca("vault client CA"),
        "rogue": make_ca("rogue CA"),
    }


@pytest.fixture
async def vault(vault_factory):
    """Routes re-read on every forward here: the tests change them between calls."""
    return await vault_factory(route_refresh_interval=0.0)


@pytest.fixture
def processor(cas, tmp_path):
    proc = start_processor(cas["processor"], tmp_path / "proc")
    yield proc
    proc.close()


@pytest.fixture
def mtls_processor(cas, tmp_path):
    proc = start_processor(cas["processor"], tmp_path / "mproc", client_ca=cas["vault"])
    yield proc
    proc.close()


def admin(vault) -> RouteAdministration:
    server = vault.server

    async def open_trail():
        return server.audit

    async def open_secrets():
        return await RouteSecrets.open(server.store, server.keys.kek, vault.clock, create=True)

    return RouteAdministration(server.store, vault.clock, open_trail, open_secrets, "ops-test")


async def add_route(vault, name, url, *, callers=("checkout",), **spec):
    await admin(vault).add(RouteSpec(name=name, url=url, **spec))
    for caller in callers:
        await vault.server.store.allow_routes(caller, [name], vault.clock.now())


async def tokens(vault):
    stub = vault.stub
    pan = (await stub.Tokenize(tokenize_request("PAN", PAN), metadata=vault.md)).token
    exp = (await stub.Tokenize(tokenize_request("CARD_EXPIRY", EXPIRY), metadata=vault.md)).token
    cvc = (await stub.Tokenize(tokenize_request("CVC", CVC), metadata=vault.md)).token
    name = (await stub.Tokenize(tokenize_request("CARDHOLDER_NAME", NAME), metadata=vault.md)).token
    return {"pan": pan, "exp": exp, "cvc": cvc, "name": name}


def forwarder(vault):
    return forward_service_pb2_grpc.ForwardServiceStub(vault.channel)


def adyen_body(t) -> bytes:
    return json.dumps(
        {
            "amount": {"currency": "EUR", "value": 1000},
            "paymentMethod": {
                "type": "scheme",
                "number": f"{{{{token:{t['pan']}}}}}",
                "expiry": f"{{{{token:{t['exp']}}}}}",
                "cvc": f"{{{{token:{t['cvc']}}}}}",
                "holderName": f"{{{{token:{t['name']}}}}}",
            },
        }
    ).encode()


def audit_texts(vault) -> list[str]:
    # Every text column a value could reach; not the tokens, time, MAC, peer port or the ids
    # the vault made up (random digits that hold the 3-digit test CVC by chance).
    return [
        repr(row)
        for row in vault.sql(
            "SELECT caller, tenant, action, tokens, purpose, outcome, reason, detail FROM audit_log"
        )
    ]


def forward_rows(vault) -> list[tuple]:
    return vault.sql(
        "SELECT caller, tokens, purpose, outcome, reason, detail FROM audit_log "
        "WHERE action = 'token.forward' ORDER BY seq"
    )


def vault_logs(caplog) -> list[str]:
    """The vault's own log lines (aiosqlite's DEBUG lines quote random key ids, where a
    3-digit CVC can appear by chance; the store never receives a value anyway)."""
    return [r.getMessage() for r in caplog.records if r.name.startswith("vault")]


def assert_clean(texts) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text


async def test_json_forward_over_mtls_reaches_the_processor_and_nothing_leaks(
    vault, cas, mtls_processor, caplog
):
    caplog.set_level(logging.DEBUG)
    pair = issue(cas["vault"], "vault-forwarder")
    await add_route(
        vault,
        "adyen",
        f"{mtls_processor.url}/charge",
        ca_pem=cas["processor"].pem,
        client_cert_pem=pair.cert,
        client_key_pem=SecretBytes(pair.key),
        allow_headers=("x-api-key", "x-request-trace"),
        tokenize_paths=("card.number",),
    )
    md = await vault.add_caller("checkout", ("forward",))
    t = await tokens(vault)
    resp = await forwarder(vault).Forward(
        fpb.ForwardRequest(
            route="adyen",
            headers={**JSON_CT, "X-API-Key": "adyen-key"},
            body=adyen_body(t),
            purpose=PURPOSE,
        ),
        metadata=md,
    )
    [got] = mtls_processor.received
    sent = json.loads(got.body)["paymentMethod"]
    assert sent == {
        "type": "scheme",
        "number": PAN,
        "expiry": EXPIRY,
        "cvc": CVC,
        "holderName": NAME,
    }
    assert got.headers["x-api-key"] == "adyen-key"
    assert resp.status == 200
    # The processor echoed the PAN: the route tokenizes it before the caller sees it.
    answer = json.loads(resp.body)
    assert answer["status"] == "succeeded"
    assert answer["card"]["number"] != PAN
    assert answer["card"]["number"].endswith("4242")
    assert dict(resp.headers) == {"content-type": "application/json", "x-request-trace": "proc-123"}
    assert_clean([resp.body.decode(), *audit_texts(vault), *vault_logs(caplog)])
    [(caller, toks, purpose, outcome, reason, detail)] = forward_rows(vault)
    assert (caller, purpose, outcome, reason) == ("checkout", PURPOSE, "ok", "")
    assert json.loads(toks) == [t["pan"], t["exp"], t["cvc"], t["name"]]
    assert dict(json.loads(detail)).items() >= {"route": "adyen", "status": "200"}.items()
    # The forwarded CVC spent its one reveal.
    exc = await expect_code(
        forwarder(vault).Forward(
            fpb.ForwardRequest(route="adyen", headers=JSON_CT, body=adyen_body(t), purpose=PURPOSE),
            metadata=md,
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    assert len(mtls_processor.received) == 1
    assert_clean([exc.details() or ""])


async def test_form_forward_is_urlencoded(vault, cas, processor):
    await add_route(
        vault,
        "stripe",
        f"{processor.url}/charge",
        ca_pem=cas["processor"].pem,
        allow_headers=("authorization", "idempotency-key"),
    )
    md = await vault.add_caller("checkout", ("forward",))
    t = await tokens(vault)
    body = (
        f"amount=1000&currency=eur&card[number]={{{{token:{t['pan']}}}}}"
        f"&card[cvc]={{{{token:{t['cvc']}}}}}&card[name]={{{{token:{t['name']}}}}}"
    ).encode()
    resp = await forwarder(vault).Forward(
        fpb.ForwardRequest(
            route="stripe",
            headers={**FORM_CT, "Authorization": "Bearer sk_test_x", "Idempotency-Key": "o-1"},
            body=body,
            purpose=PURPOSE,
        ),
        metadata=md,
    )
    [got] = processor.received
    form = parse_qs(got.body.decode())
    assert form["card[number]"] == [PAN]
    assert form["card[cvc]"] == [CVC]
    assert form["card[name]"] == [NAME]  # & and quotes encoded, not splitting the form
    assert form["amount"] == ["1000"]
    assert got.headers["authorization"] == "Bearer sk_test_x"
    assert resp.status == 200
    # Not asked to filter: but set-cookie is not an allowed header and is not returned.
    assert "set-cookie" not in resp.headers


async def _refused(vault, processor, request, md, code, reason=None):
    exc = await expect_code(forwarder(vault).Forward(request, metadata=md), code)
    if reason is not None:
        assert_reason(exc, reason)
    assert processor.received == []
    assert_clean([exc.details() or ""])
    return exc


async def test_refusals_before_anything_is_sent(vault, cas, processor, caplog):
    caplog.set_level(logging.DEBUG)
    await add_route(
        vault,
        "stripe",
        f"{processor.url}/charge",
        ca_pem=cas["processor"].pem,
        callers=("checkout", "stranger"),
    )
    md = await vault.add_caller("checkout", ("forward",))
    t = await tokens(vault)
    body = adyen_body(t)

    def req(**kw):
        return fpb.ForwardRequest(
            **({"route": "stripe", "headers": JSON_CT, "body": body, "purpose": PURPOSE} | kw)
        )

    await _refused(
        vault, processor, req(route="nope"), md, grpc.StatusCode.NOT_FOUND, "ROUTE_NOT_FOUND"
    )
    other_md = await vault.add_caller("reports", ("forward",))
    await _refused(
        vault, processor, req(), other_md, grpc.StatusCode.PERMISSION_DENIED, "ROUTE_NOT_ALLOWED"
    )
    exc = await _refused(vault, processor, req(purpose=""), md, grpc.StatusCode.INVALID_ARGUMENT)
    assert_invalid(exc, "purpose")
    exc = await _refused(
        vault,
        processor,
        req(headers={**JSON_CT, "host": "evil.example"}),
        md,
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert_invalid(exc, "headers[host]")
    stranger = await vault.add_caller("stranger", ("forward",), tenant="other")
    await _refused(vault, processor, req(), stranger, grpc.StatusCode.NOT_FOUND)
    no_scope = await vault.add_caller("detok", ("detokenize",))
    await _refused(
        vault, processor, req(), no_scope, grpc.StatusCode.PERMISSION_DENIED, "MISSING_SCOPE"
    )
    await vault.server.store.allow_routes("expiry-only", ["stripe"], vault.clock.now())
    narrow = await vault.add_caller("expiry-only", ("forward",), reveal_kinds=("CARD_EXPIRY",))
    await _refused(
        vault, processor, req(), narrow, grpc.StatusCode.PERMISSION_DENIED, "KIND_NOT_ALLOWED"
    )
    # None of those spent the CVC: the real forward still has it.
    resp = await forwarder(vault).Forward(req(), metadata=md)
    assert resp.status == 200
    assert len(processor.received) == 1
    reasons = [r[4] for r in forward_rows(vault)]
    assert "ROUTE_NOT_FOUND" in reasons
    assert "KIND_NOT_ALLOWED" in reasons
    assert_clean([*audit_texts(vault), *vault_logs(caplog)])


async def test_mtls_processor_refuses_a_route_without_the_client_certificate(
    vault, cas, mtls_processor
):
    await add_route(vault, "nocert", f"{mtls_processor.url}/charge", ca_pem=cas["processor"].pem)
    md = await vault.add_caller("checkout", ("forward",))
    t = await tokens(vault)
    request = fpb.ForwardRequest(
        route="nocert", headers=JSON_CT, body=adyen_body(t), purpose=PURPOSE
    )
    exc = await expect_code(
        forwarder(vault).Forward(request, metadata=md), grpc.StatusCode.UNAVAILABLE
    )
    # TLS 1.3: the client finishes its handshake before the server checks the client
    # certificate, so the refusal shows as a broken exchange (the request counts as sent).
    assert error_info(exc).reason in {"PROCESSOR_TLS_FAILED", "PROCESSOR_FAILED"}
    assert_clean([exc.details() or ""])
    assert mtls_processor.received == []


async def test_http_route_is_refused_at_add(vault):
    with pytest.raises(InvalidArgumentError) as raised:
        await admin(vault).add(RouteSpec(name="plain", url="http://127.0.0.1:8080/pay"))
    assert [v.field for v in raised.value.violations] == ["url"]
    assert await vault.server.store.routes() == []


async def test_redirect_is_not_followed(vault, cas, processor, tmp_path):
    target = start_processor(cas["processor"], tmp_path / "target")
    try:
        processor.redirect_to = f"{target.url}/charge"
        await add_route(vault, "moving", f"{processor.url}/redirect", ca_pem=cas["processor"].pem)
        md = await vault.add_caller("checkout", ("forward",))
        t = await tokens(vault)
        exc = await expect_code(
            forwarder(vault).Forward(
                fpb.ForwardRequest(
                    route="moving", headers=JSON_CT, body=adyen_body(t), purpose=PURPOSE
                ),
                metadata=md,
            ),
            grpc.StatusCode.FAILED_PRECONDITION,
        )
        assert_reason(exc, "PROCESSOR_REDIRECT")
        assert target.received == []
        assert_clean([exc.details() or ""])
    finally:
        target.close()


async def test_wrong_ca_sends_nothing_and_keeps_the_cvc(vault, cas, processor):
    await add_route(vault, "rogue", f"{processor.url}/charge", ca_pem=cas["rogue"].pem)
    await add_route(vault, "right", f"{processor.url}/charge", ca_pem=cas["processor"].pem)
    md = await vault.add_caller("checkout", ("forward",))
    t = await tokens(vault)

    def req(route):
        return fpb.ForwardRequest(route=route, headers=JSON_CT, body=adyen_body(t), purpose=PURPOSE)

    exc = await _refused(
        vault, processor, req("rogue"), md, grpc.StatusCode.UNAVAILABLE, "PROCESSOR_TLS_FAILED"
    )
    assert_clean([exc.details() or ""])
    # Nothing left the process: the CVC was given back and still goes out once.
    assert (await forwarder(vault).Forward(req("right"), metadata=md)).status == 200
    assert json.loads(processor.received[0].body)["paymentMethod"]["cvc"] == CVC


async def test_answer_over_the_size_limit(vault, cas, processor):
    await add_route(
        vault, "big", f"{processor.url}/big", ca_pem=cas["processor"].pem, max_response_bytes=4096
    )
    md = await vault.add_caller("checkout", ("forward",))
    exc = await expect_code(
        forwarder(vault).Forward(
            fpb.ForwardRequest(route="big", headers=JSON_CT, body=b"{}", purpose=PURPOSE),
            metadata=md,
        ),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    )
    assert_reason(exc, "PROCESSOR_ANSWER_TOO_LARGE")


async def test_timeout(vault, cas, processor):
    await add_route(
        vault, "slow", f"{processor.url}/slow", ca_pem=cas["processor"].pem, timeout=0.5
    )
    md = await vault.add_caller("checkout", ("forward",))
    t = await tokens(vault)
    exc = await expect_code(
        forwarder(vault).Forward(
            fpb.ForwardRequest(route="slow", headers=JSON_CT, body=adyen_body(t), purpose=PURPOSE),
            metadata=md,
        ),
        grpc.StatusCode.DEADLINE_EXCEEDED,
    )
    assert_reason(exc, "PROCESSOR_TIMEOUT")
    [(_, _, _, outcome, reason, _)] = forward_rows(vault)
    assert (outcome, reason) == ("error", "PROCESSOR_TIMEOUT")
