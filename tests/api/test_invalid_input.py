"""Every class of invalid input, from tests/data/api/invalid.json: INVALID_ARGUMENT with
ErrorInfo (domain vault) and a BadRequest naming the field, nothing stored, and nothing of
the submitted value in what the caller is told."""

from __future__ import annotations

import logging
from typing import Any

import grpc
import pytest
from api_helpers import (
    DOMAIN,
    assert_invalid,
    assert_no_leak,
    error_info,
    error_texts,
    expect_code,
    load_data,
    rpc_error,
    tokenize_request,
)
from google.protobuf import json_format

from vault.v1 import token_service_pb2 as pb

CASES = load_data("invalid.json")["cases"]
REQUESTS = {
    "Tokenize": pb.TokenizeRequest,
    "BatchTokenize": pb.BatchTokenizeRequest,
    "Detokenize": pb.DetokenizeRequest,
    "BatchDetokenize": pb.BatchDetokenizeRequest,
    "GetToken": pb.GetTokenRequest,
    "DeleteToken": pb.DeleteTokenRequest,
}
# Request fields that are not submitted data (enums, durations).
NOT_DATA = {"kind", "format", "ttl", "deterministic"}


def expand(obj: Any) -> Any:
    """Replace {"repeat": s, "times": n[, "then": t]} by the string it stands for."""
    if isinstance(obj, dict):
        if "repeat" in obj:
            return obj["repeat"] * obj["times"] + obj.get("then", "")
        return {k: expand(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [expand(v) for v in obj]
    return obj


def submitted(obj: Any, key: str = "") -> list[str]:
    """Every string the caller sent as data: values, address fields, map keys and values."""
    if isinstance(obj, str):
        return [] if key in NOT_DATA else [obj]
    if isinstance(obj, dict):
        out = list(obj) if key == "metadata" else []
        for k, v in obj.items():
            out += submitted(v, k)
        return out
    if isinstance(obj, list):
        return [s for v in obj for s in submitted(v, key)]
    return []


def test_cases_cover_every_method_and_kind():
    methods = {c["method"] for c in CASES}
    assert methods == set(REQUESTS)
    kinds = {c["request"].get("kind") for c in CASES if c["method"] == "Tokenize"}
    for kind in ("PAN", "CARD_EXPIRY", "CARDHOLDER_NAME", "BANK_ACCOUNT", "EMAIL", "PHONE",
                 "TEXT", "BILLING_ADDRESS", "SHIPPING_ADDRESS", "UNSPECIFIED"):  # fmt: skip
        assert f"DATA_KIND_{kind}" in kinds
    fields = {c["field"] for c in CASES}
    for field in ("kind", "text", "address", "address.region_code", "format", "metadata",
                  "subject", "ttl", "request_id", "token", "purpose"):  # fmt: skip
        assert field in fields


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
async def test_invalid_input(vault, case, caplog):
    caplog.set_level(logging.DEBUG)
    data = expand(case["request"])
    request = json_format.ParseDict(data, REQUESTS[case["method"]]())
    call = getattr(vault.stub, case["method"])(request, metadata=vault.md)
    exc = await expect_code(call, grpc.StatusCode.INVALID_ARGUMENT)
    assert_invalid(exc, case["field"], reason=case.get("reason"))
    assert_no_leak(error_texts(exc), submitted(data))
    assert vault.count_tokens() == 0
    # Nor in any log line, at any level (values of 6+ characters: shorter ones can occur
    # by chance in debug output such as object addresses).
    logged = [r.getMessage() for r in caplog.records]
    for value in submitted(data):
        if len(value.strip()) >= 6:
            assert not any(value.strip() in line for line in logged), "value in a log line"


async def test_violations_are_all_reported_at_once(vault):
    req = tokenize_request(
        "PAN", "4242424242424241", subject="bad\nsubject", request_id="has space",
        metadata={"bad key": "v"},
    )  # fmt: skip
    exc = await expect_code(
        vault.stub.Tokenize(req, metadata=vault.md), grpc.StatusCode.INVALID_ARGUMENT
    )
    for field in ("text", "subject", "request_id", "metadata"):
        assert_invalid(exc, field)


async def test_invalid_input_does_not_disturb_stored_tokens(vault):
    good = await vault.stub.Tokenize(tokenize_request("PAN", "4242424242424242"), metadata=vault.md)
    for case in CASES[:40]:
        request = json_format.ParseDict(expand(case["request"]), REQUESTS[case["method"]]())
        await expect_code(
            getattr(vault.stub, case["method"])(request, metadata=vault.md),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
    assert vault.sql("SELECT token FROM tokens") == [(good.token,)]
    info = await vault.stub.GetToken(pb.GetTokenRequest(token=good.token), metadata=vault.md)
    assert info.masked == "************4242"


async def test_message_over_the_configured_limit(vault_factory):
    limit = 64 * 1024
    vault = await vault_factory(max_message_bytes=limit)
    big = tokenize_request("TEXT", "x" * (limit + 1))
    exc = await expect_code(
        vault.stub.Tokenize(big, metadata=vault.md), grpc.StatusCode.RESOURCE_EXHAUSTED
    )
    assert "x" * 64 not in (exc.details() or "")
    batch = pb.BatchTokenizeRequest(requests=[tokenize_request("TEXT", "y" * 4000)] * 20)
    await expect_code(
        vault.stub.BatchTokenize(batch, metadata=vault.md), grpc.StatusCode.RESOURCE_EXHAUSTED
    )
    assert vault.count_tokens() == 0
    # Under the limit the server still serves, on the same channel.
    ok = await vault.stub.Tokenize(tokenize_request("TEXT", "x" * 4000), metadata=vault.md)
    assert ok.created is True


async def test_message_over_the_default_limit(vault):
    big = tokenize_request("TEXT", "z" * (4 * 1024 * 1024 + 1))
    await expect_code(
        vault.stub.Tokenize(big, metadata=vault.md), grpc.StatusCode.RESOURCE_EXHAUSTED
    )
    # Within the message limit but over the text limit: a field violation, not a crash.
    long_text = tokenize_request("TEXT", "z" * 5000)
    exc = await expect_code(
        vault.stub.Tokenize(long_text, metadata=vault.md), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert_invalid(exc, "text")
    assert vault.count_tokens() == 0


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("invalid argument: 4242424242424241", "4242424242424241"),
        ("value ending 4241 refused", "4242 4242 4242 4241"),
        ("bad digits 2424", "4242-4242"),
        ("the note said Hello there", "Hello there"),
    ],
)
def test_the_leak_check_itself_catches_leaks(text, value):
    with pytest.raises(AssertionError):
        assert_no_leak([text], [value])
    assert_no_leak(["invalid argument: text"], [value])


@pytest.mark.parametrize(
    "raw",
    [
        b"\x08\x0a\x12\x04\xff\xfe\xfd\xfc",  # kind TEXT, text of invalid UTF-8
        b"\xff\xff\xff\xff",  # not a protobuf message at all
        b"\x08\x01\x12\x20" + b"4242424242424242",  # PAN text truncated mid-field
    ],
    ids=["bad-utf8", "garbage", "truncated"],
)
async def test_undecodable_request_is_invalid_argument(vault, raw):
    """Bytes that do not decode as a TokenizeRequest are the caller's fault: like every
    other failure they get a canonical code (INVALID_ARGUMENT) and ErrorInfo, not
    grpc-python's UNKNOWN carrying a protobuf exception text."""
    tokenize = vault.channel.unary_unary(
        "/vault.v1.TokenService/Tokenize",
        request_serializer=lambda b: b,
        response_deserializer=pb.TokenizeResponse.FromString,
    )
    exc = await rpc_error(tokenize(raw, metadata=vault.md))
    assert "4242" not in (exc.details() or "")
    assert vault.count_tokens() == 0
    assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, (exc.code(), exc.details())
    assert error_info(exc).domain == DOMAIN
