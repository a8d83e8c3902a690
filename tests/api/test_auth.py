"""Who may call what: credentials, scopes before existence, tenants kept apart, and the
unauthenticated health and reflection services."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest
from api_helpers import (
    PURPOSE,
    assert_reason,
    bearer,
    error_info,
    expect_code,
    rpc_error,
    tokenize_request,
)
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

from vault.auth import apikeys
from vault.auth.apikeys import mint_api_key
from vault.v1 import token_service_pb2 as pb

METHODS = [
    "Tokenize",
    "BatchTokenize",
    "Detokenize",
    "BatchDetokenize",
    "GetToken",
    "DeleteToken",
    "UpdateToken",
    "TokenizeStream",
    "DetokenizeStream",
]
# Streams are called with one request and answer with the first item (a refused stream
# fails as a whole, with the unary call's status).
STREAMS = {"TokenizeStream", "DetokenizeStream"}
MISSING_RANDOM = "tok_" + "b" * 32
MISSING_PAN = "4242000000004240"


def request_for(method: str, token: str) -> Any:
    """A well-formed request for ``method`` about ``token``."""
    return {
        "Tokenize": lambda: tokenize_request("PAN", "4242424242424242"),
        "BatchTokenize": lambda: pb.BatchTokenizeRequest(
            requests=[tokenize_request("EMAIL", "jane@example.com")]
        ),
        "Detokenize": lambda: pb.DetokenizeRequest(token=token, purpose=PURPOSE),
        "BatchDetokenize": lambda: pb.BatchDetokenizeRequest(tokens=[token], purpose=PURPOSE),
        "GetToken": lambda: pb.GetTokenRequest(token=token),
        "DeleteToken": lambda: pb.DeleteTokenRequest(token=token),
        "UpdateToken": lambda: pb.UpdateTokenRequest(token=token, text="the corrected note"),
        "TokenizeStream": lambda: tokenize_request("PAN", "4242424242424242"),
        "DetokenizeStream": lambda: pb.DetokenizeStreamRequest(token=token, purpose=PURPOSE),
    }[method]()


def call(vault, method: str, request: Any, md: Any):
    if method in STREAMS:
        return _first_answer(getattr(vault.stub, method)(iter([request]), metadata=md))
    return getattr(vault.stub, method)(request, metadata=md)


async def _first_answer(stream: Any) -> Any:
    answers = [answer async for answer in stream]
    return answers[0]


async def _existing_token(vault) -> str:
    resp = await vault.stub.Tokenize(
        tokenize_request("TEXT", "the stored note", subject="cust-1"), metadata=vault.md
    )
    return resp.token


def _status(exc: grpc.aio.AioRpcError) -> Any:
    status = rpc_status.from_call(exc)
    assert status is not None
    return status


# -- no or bad credentials --------------------------------------------------------------


def _unknown_key(_vault: Any) -> Any:
    return bearer(mint_api_key().text)


def _wrong_secret(vault: Any) -> Any:
    key_id = vault.key.split("_")[1]
    return bearer(f"vk_{key_id}_{mint_api_key().secret}")


CREDENTIALS: dict[str, tuple[Callable[[Any], Any], str]] = {
    "none": (lambda _v: None, "NO_CREDENTIAL"),
    "empty-header": (lambda _v: (("authorization", ""),), "NO_CREDENTIAL"),
    "bearer-nothing": (lambda _v: (("authorization", "Bearer "),), "BAD_CREDENTIAL"),
    "basic-scheme": (lambda v: (("authorization", f"Basic {v.key}"),), "BAD_CREDENTIAL"),
    "no-scheme": (lambda v: (("authorization", v.key),), "BAD_CREDENTIAL"),
    "garbage": (lambda _v: bearer("garbage"), "BAD_CREDENTIAL"),
    "too-long": (lambda v: bearer(v.key + "x" * 200), "BAD_CREDENTIAL"),
    "unknown-key": (_unknown_key, "BAD_CREDENTIAL"),
    "wrong-secret": (_wrong_secret, "BAD_CREDENTIAL"),
    "other-header": (lambda v: (("x-api-key", v.key),), "NO_CREDENTIAL"),
}


@pytest.mark.parametrize("cred", list(CREDENTIALS))
async def test_bad_credentials_are_unauthenticated_everywhere(vault, cred):
    make, reason = CREDENTIALS[cred]
    token = await _existing_token(vault)
    md = make(vault)
    for method in METHODS:
        exc = await expect_code(
            call(vault, method, request_for(method, token), md), grpc.StatusCode.UNAUTHENTICATED
        )
        assert_reason(exc, reason)
        assert vault.key not in (exc.details() or "")
    # Nothing was created or deleted.
    assert vault.sql("SELECT token FROM tokens") == [(token,)]


async def test_unknown_key_and_wrong_secret_look_the_same(vault):
    """No oracle for which key ids exist."""
    token = await _existing_token(vault)
    req = request_for("GetToken", token)
    unknown = await rpc_error(call(vault, "GetToken", req, _unknown_key(vault)))
    wrong = await rpc_error(call(vault, "GetToken", req, _wrong_secret(vault)))
    assert _status(unknown) == _status(wrong)


async def test_scheme_is_case_insensitive(vault):
    md = (("authorization", f"bearer {vault.key}"),)
    resp = await vault.stub.Tokenize(tokenize_request("TEXT", "hello"), metadata=md)
    assert resp.created is True


async def _refused_everywhere(vault, md, reason: str, token: str) -> None:
    for method in METHODS:
        exc = await expect_code(
            call(vault, method, request_for(method, token), md), grpc.StatusCode.UNAUTHENTICATED
        )
        assert_reason(exc, reason)


async def test_revoked_caller(vault):
    token = await _existing_token(vault)
    md = await vault.add_caller("revoked-app")
    assert await vault.server.store.revoke_caller("revoked-app", vault.clock.now())
    await _refused_everywhere(vault, md, "REVOKED_CREDENTIAL", token)
    assert vault.count_tokens() == 1


async def test_revocation_takes_effect_once_the_cache_lapses(vault, monkeypatch):
    monkeypatch.setattr(apikeys, "CACHE_SECONDS", 0.0)
    token = await _existing_token(vault)
    md = await vault.add_caller("soon-revoked")
    ok = await vault.stub.GetToken(pb.GetTokenRequest(token=token), metadata=md)
    assert ok.token == token
    assert await vault.server.store.revoke_caller("soon-revoked", vault.clock.now())
    await _refused_everywhere(vault, md, "REVOKED_CREDENTIAL", token)


async def test_expired_caller(vault):
    token = await _existing_token(vault)
    md = await vault.add_caller("expired-app", expires_at=vault.clock.now() - 1)
    await _refused_everywhere(vault, md, "EXPIRED_CREDENTIAL", token)


async def test_caller_expires_as_the_clock_moves(vault):
    token = await _existing_token(vault)
    md = await vault.add_caller("short-lived", expires_at=vault.clock.now() + 60)
    ok = await vault.stub.GetToken(pb.GetTokenRequest(token=token), metadata=md)
    assert ok.token == token
    vault.clock.advance(61)
    await _refused_everywhere(vault, md, "EXPIRED_CREDENTIAL", token)


# -- scopes -----------------------------------------------------------------------------

ROLES: dict[str, tuple[tuple[str, ...], set[str]]] = {
    "tokenize-only": (
        ("tokenize",),
        {"Tokenize", "BatchTokenize", "DeleteToken", "UpdateToken", "TokenizeStream"},
    ),
    "detokenize-only": (
        ("detokenize",),
        {"Detokenize", "BatchDetokenize", "GetToken", "DetokenizeStream"},
    ),
    "reveal-masked-only": (("reveal-masked",), {"GetToken"}),
    "admin-only": (("subjects", "keys", "audit"), set()),
}


@pytest.mark.parametrize("role", list(ROLES))
async def test_scope_is_checked_before_existence(vault, role):
    scopes, allowed = ROLES[role]
    md = await vault.add_caller(role, scopes)
    existing = await _existing_token(vault)
    for method in sorted(set(METHODS) - allowed):
        statuses = []
        for token in (existing, MISSING_RANDOM, MISSING_PAN, "not a token", ""):
            exc = await expect_code(
                call(vault, method, request_for(method, token), md),
                grpc.StatusCode.PERMISSION_DENIED,
            )
            assert_reason(exc, "MISSING_SCOPE")
            statuses.append(_status(exc))
        assert all(s == statuses[0] for s in statuses), method
        if method.startswith("Batch"):
            empty = (
                pb.BatchTokenizeRequest()
                if method == "BatchTokenize"
                else pb.BatchDetokenizeRequest()
            )
            exc = await expect_code(
                call(vault, method, empty, md), grpc.StatusCode.PERMISSION_DENIED
            )
            assert _status(exc) == statuses[0]
    if "Tokenize" not in allowed:
        # Not even invalid input is looked at.
        exc = await expect_code(
            call(vault, "Tokenize", tokenize_request("PAN", "4242424242424241"), md),
            grpc.StatusCode.PERMISSION_DENIED,
        )
        assert_reason(exc, "MISSING_SCOPE")
    assert vault.sql("SELECT token FROM tokens") == [(existing,)]

    # What the role allows works (DeleteToken last: it removes the token).
    for method in sorted(allowed, key=lambda m: m == "DeleteToken"):
        resp = await call(vault, method, request_for(method, existing), md)
        if method == "GetToken":
            assert resp.masked == "***"
        if method == "Detokenize":
            assert resp.text == "the stored note"
        if method == "BatchDetokenize":
            assert [r.text for r in resp.responses] == ["the stored note"]
        if method == "DetokenizeStream":
            assert resp.response.text == "the stored note"
        if method == "TokenizeStream":
            assert resp.response.created
    stored = {t for (t,) in vault.sql("SELECT token FROM tokens")}
    assert (existing in stored) == ("DeleteToken" not in allowed)
    assert len(stored) == 1 + len({"Tokenize", "BatchTokenize", "TokenizeStream"} & allowed) - (
        "DeleteToken" in allowed
    )


async def test_reveal_masked_sees_no_value(vault):
    md = await vault.add_caller("support-desk", ("reveal-masked",))
    token = (
        await vault.stub.Tokenize(tokenize_request("PAN", "4111111111111111"), metadata=vault.md)
    ).token
    info = await vault.stub.GetToken(pb.GetTokenRequest(token=token), metadata=md)
    assert info.masked == "************1111"
    assert b"4111111111111111" not in info.SerializeToString()


# -- tenants ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["TEXT", "PAN"])
async def test_other_tenants_token_is_answered_like_a_missing_one(vault, kind):
    acme = await vault.add_caller("acme-app", tenant="acme")
    value = "the stored note" if kind == "TEXT" else "4242424242424242"
    theirs = (await vault.stub.Tokenize(tokenize_request(kind, value), metadata=vault.md)).token
    missing = MISSING_RANDOM if kind == "TEXT" else MISSING_PAN
    assert len(missing) == len(theirs)
    for method in ("Detokenize", "BatchDetokenize", "GetToken", "DeleteToken", "UpdateToken"):
        exc_theirs = await expect_code(
            call(vault, method, request_for(method, theirs), acme), grpc.StatusCode.NOT_FOUND
        )
        exc_missing = await expect_code(
            call(vault, method, request_for(method, missing), acme), grpc.StatusCode.NOT_FOUND
        )
        assert exc_theirs.details() == exc_missing.details()
        assert _status(exc_theirs) == _status(exc_missing)
        assert error_info(exc_theirs).reason == "TOKEN_NOT_FOUND"
    # The owner still has it, untouched by the other tenant's DeleteToken.
    revealed = await vault.stub.Detokenize(
        pb.DetokenizeRequest(token=theirs, purpose=PURPOSE), metadata=vault.md
    )
    assert revealed.text == value


async def test_other_tenant_in_a_batch_refuses_the_whole_batch(vault):
    acme = await vault.add_caller("acme-app", tenant="acme")
    mine = (await vault.stub.Tokenize(tokenize_request("TEXT", "acme note"), metadata=acme)).token
    theirs = (
        await vault.stub.Tokenize(tokenize_request("TEXT", "default note"), metadata=vault.md)
    ).token
    exc = await expect_code(
        vault.stub.BatchDetokenize(
            pb.BatchDetokenizeRequest(tokens=[mine, theirs], purpose=PURPOSE), metadata=acme
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    assert "acme note" not in (exc.details() or "")
    assert "default note" not in (exc.details() or "")


# -- transport limits -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "size"),
    [("authorization", 20 * 1024), ("authorization", 100 * 1024), ("x-padding", 100 * 1024)],
)
async def test_huge_header_is_refused_and_the_server_keeps_serving(vault, header, size):
    # Up to 64 KiB of headers reach the vault (an oversized key is UNAUTHENTICATED);
    # beyond that the transport refuses the call.
    big = "a" * size
    md = (
        (("authorization", f"Bearer {big}"),)
        if header == "authorization"
        else (*vault.md, (header, big))
    )
    exc = await rpc_error(vault.stub.Tokenize(tokenize_request("TEXT", "hello"), metadata=md))
    assert exc.code() != grpc.StatusCode.OK
    assert exc.code() in {
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
    }, exc.code()
    assert vault.count_tokens() == 0
    # Same channel and a fresh one both still work.
    ok = await vault.stub.Tokenize(tokenize_request("TEXT", "hello"), metadata=vault.md)
    assert ok.created is True
    async with grpc.aio.insecure_channel(f"127.0.0.1:{vault.server.port}") as channel:
        stub = type(vault.stub)(channel)
        info = await stub.GetToken(pb.GetTokenRequest(token=ok.token), metadata=vault.md)
        assert info.token == ok.token


# -- health and reflection --------------------------------------------------------------


async def test_health_answers_without_credentials(vault):
    health = health_pb2_grpc.HealthStub(vault.channel)
    overall = await health.Check(health_pb2.HealthCheckRequest())
    assert overall.status == health_pb2.HealthCheckResponse.SERVING
    tokens = await health.Check(health_pb2.HealthCheckRequest(service="vault.v1.TokenService"))
    assert tokens.status == health_pb2.HealthCheckResponse.SERVING
    exc = await rpc_error(health.Check(health_pb2.HealthCheckRequest(service="no.such.Service")))
    assert exc.code() == grpc.StatusCode.NOT_FOUND


REFLECTION_V1 = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"


def _reflection_requests() -> list[reflection_pb2.ServerReflectionRequest]:
    return [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="vault.v1.TokenService"),
    ]


def _check_reflection(responses: list[reflection_pb2.ServerReflectionResponse]) -> None:
    assert len(responses) == 2
    names = {s.name for s in responses[0].list_services_response.service}
    assert "vault.v1.TokenService" in names
    assert "grpc.health.v1.Health" in names
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in responses[1].file_descriptor_response.file_descriptor_proto
    ]
    services = {
        f"{f.package}.{s.name}": {m.name for m in s.method} for f in files for s in f.service
    }
    assert services["vault.v1.TokenService"] == set(METHODS)


async def test_reflection_v1alpha_without_credentials(vault):
    stub = reflection_pb2_grpc.ServerReflectionStub(vault.channel)
    responses = [r async for r in stub.ServerReflectionInfo(iter(_reflection_requests()))]
    _check_reflection(responses)


async def test_reflection_v1_without_credentials(vault):
    method = vault.channel.stream_stream(
        REFLECTION_V1,
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    responses = [r async for r in method(iter(_reflection_requests()))]
    _check_reflection(responses)
