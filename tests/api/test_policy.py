"""Caller policy through a real server: the denial matrix (every method x every scope
combination x own/other tenant), per-kind reveal permissions, reveal rate limits."""

from __future__ import annotations

import itertools

import grpc
import pytest
from api_helpers import assert_reason, error_info, expect_code, tokenize_request
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from vault.v1 import token_service_pb2 as pb

PAN = "4242424242424242"
EMAIL = "jo@example.com"
PURPOSE = "policy test"
SCOPES = ("tokenize", "detokenize", "reveal-masked")
COMBOS = [combo for n in range(len(SCOPES) + 1) for combo in itertools.combinations(SCOPES, n)]
METHODS = ("Tokenize", "BatchTokenize", "Detokenize", "BatchDetokenize", "GetToken", "DeleteToken")


def _needs(method: str, scopes: tuple[str, ...]) -> bool:
    if method in {"Tokenize", "BatchTokenize", "DeleteToken"}:
        return "tokenize" in scopes
    if method in {"Detokenize", "BatchDetokenize"}:
        return "detokenize" in scopes
    return "reveal-masked" in scopes or "detokenize" in scopes


async def _call(stub, method: str, token: str, md):
    if method == "Tokenize":
        return await stub.Tokenize(tokenize_request("DATA_KIND_PAN", PAN), metadata=md)
    if method == "BatchTokenize":
        batch = pb.BatchTokenizeRequest(requests=[tokenize_request("DATA_KIND_PAN", PAN)])
        return await stub.BatchTokenize(batch, metadata=md)
    if method == "Detokenize":
        return await stub.Detokenize(
            pb.DetokenizeRequest(token=token, purpose=PURPOSE), metadata=md
        )
    if method == "BatchDetokenize":
        return await stub.BatchDetokenize(
            pb.BatchDetokenizeRequest(tokens=[token], purpose=PURPOSE), metadata=md
        )
    if method == "GetToken":
        return await stub.GetToken(pb.GetTokenRequest(token=token), metadata=md)
    return await stub.DeleteToken(pb.DeleteTokenRequest(token=token), metadata=md)


@pytest.mark.parametrize("scopes", COMBOS, ids=lambda c: "+".join(c) or "none")
async def test_denial_matrix(vault, scopes):
    md = await vault.add_caller("matrix", scopes)
    for method, own in itertools.product(METHODS, (True, False)):
        # A fresh token per case: DeleteToken consumes its own.
        tenant_md = vault.md if own else await _other_tenant(vault)
        resp = await vault.stub.Tokenize(tokenize_request("DATA_KIND_PAN", PAN), metadata=tenant_md)
        call = _call(vault.stub, method, resp.token, md)
        where = f"{method} own={own} scopes={scopes}"
        if not _needs(method, scopes):
            exc = await expect_code(call, grpc.StatusCode.PERMISSION_DENIED)
            assert PAN not in str(exc.details()), where
            continue
        if not own and method not in {"Tokenize", "BatchTokenize"}:
            exc = await expect_code(call, grpc.StatusCode.NOT_FOUND)
            assert PAN not in str(exc.details()), where
            continue
        answer = await call
        text = str(answer)
        revealing = method in {"Detokenize", "BatchDetokenize"}
        assert (PAN in text) == revealing, where


_OTHER: dict[int, tuple[tuple[str, str], ...]] = {}


async def _other_tenant(vault):
    key = id(vault)
    if key not in _OTHER:
        _OTHER[key] = await vault.add_caller("other-tenant", ("tokenize",), tenant="elsewhere")
    return _OTHER[key]


async def test_a_caller_reveals_only_its_kinds(vault):
    md = await vault.add_caller("emails-only", ("detokenize",), reveal_kinds=("EMAIL",))
    email = await vault.stub.Tokenize(tokenize_request("DATA_KIND_EMAIL", EMAIL), metadata=vault.md)
    pan = await vault.stub.Tokenize(tokenize_request("DATA_KIND_PAN", PAN), metadata=vault.md)
    ok = await vault.stub.Detokenize(
        pb.DetokenizeRequest(token=email.token, purpose=PURPOSE), metadata=md
    )
    assert ok.text == EMAIL
    exc = await expect_code(
        vault.stub.Detokenize(pb.DetokenizeRequest(token=pan.token, purpose=PURPOSE), metadata=md),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    assert_reason(exc, "KIND_NOT_ALLOWED")
    # One forbidden kind refuses the whole batch: no value comes back.
    exc = await expect_code(
        vault.stub.BatchDetokenize(
            pb.BatchDetokenizeRequest(tokens=[email.token, pan.token], purpose=PURPOSE),
            metadata=md,
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    assert EMAIL not in str(exc.details())


def _retry_delay(exc) -> float:
    status = rpc_status.from_call(exc)
    for detail in status.details:
        info = error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            return info.retry_delay.ToNanoseconds() / 1e9
    raise AssertionError("no RetryInfo")


async def test_reveal_rate_limit_is_a_token_bucket(vault):
    md = await vault.add_caller("slow", ("detokenize",), reveal_rate=1.0, reveal_burst=2)
    resp = await vault.stub.Tokenize(tokenize_request("DATA_KIND_PAN", PAN), metadata=vault.md)
    request = pb.DetokenizeRequest(token=resp.token, purpose=PURPOSE)
    for _ in range(2):
        assert (await vault.stub.Detokenize(request, metadata=md)).text == PAN
    exc = await expect_code(
        vault.stub.Detokenize(request, metadata=md), grpc.StatusCode.RESOURCE_EXHAUSTED
    )
    assert error_info(exc).reason == "REVEAL_RATE_EXCEEDED"
    assert 0.9 <= _retry_delay(exc) <= 1.1
    # Scope and rate come before existence: a missing token is refused the same way.
    await expect_code(
        vault.stub.Detokenize(
            pb.DetokenizeRequest(token="4000000000000002", purpose=PURPOSE), metadata=md
        ),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    )
    vault.clock.advance(1.0)
    assert (await vault.stub.Detokenize(request, metadata=md)).text == PAN
    # Other callers are not limited by this one's bucket.
    assert (await vault.stub.Detokenize(request, metadata=vault.md)).text == PAN


async def test_a_batch_larger_than_the_burst_is_refused_whole(vault):
    md = await vault.add_caller("small-burst", ("detokenize",), reveal_rate=5.0, reveal_burst=3)
    tokens = []
    for _ in range(4):
        resp = await vault.stub.Tokenize(tokenize_request("DATA_KIND_PAN", PAN), metadata=vault.md)
        tokens.append(resp.token)
    exc = await expect_code(
        vault.stub.BatchDetokenize(
            pb.BatchDetokenizeRequest(tokens=tokens, purpose=PURPOSE), metadata=md
        ),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    )
    assert PAN not in str(exc.details())
    ok = await vault.stub.BatchDetokenize(
        pb.BatchDetokenizeRequest(tokens=tokens[:3], purpose=PURPOSE), metadata=md
    )
    assert [r.text for r in ok.responses] == [PAN] * 3
