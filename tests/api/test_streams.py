"""TokenizeStream and DetokenizeStream through a real server: answers in request order,
each with its own status (a bad item never ends the stream), the unary call's auth,
rate limits and audit, and flow control against a client that stops reading."""

from __future__ import annotations

import asyncio
import random

import grpc
import pytest
from api_helpers import error_info, expect_code, random_pan, tokenize_request
from google.rpc import error_details_pb2

from vault.api.streams import STREAM_WINDOW
from vault.audit.base import ACTION_REVEAL
from vault.auth import apikeys
from vault.v1 import token_service_pb2 as pb

PURPOSE = "stream test"
INVALID = grpc.StatusCode.INVALID_ARGUMENT.value[0]
NOT_FOUND = grpc.StatusCode.NOT_FOUND.value[0]
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]


def _fields(status) -> list[str]:
    for detail in status.details:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            return [v.field for v in bad.field_violations]
    return []


def _reason(status) -> str:
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info.reason
    return ""


async def _all(call) -> list:
    return [answer async for answer in call]


def _reveals(vault) -> int:
    ((n,),) = vault.sql("SELECT count(*) FROM audit_log WHERE action = ?", (ACTION_REVEAL,))
    return n


async def test_tokenize_stream_answers_every_item_in_order(vault):
    rng = random.Random(14)
    pans = [random_pan(rng, 16) for _ in range(3 * STREAM_WINDOW)]
    answers = await _all(
        vault.stub.TokenizeStream(
            iter([tokenize_request("DATA_KIND_PAN", p) for p in pans]), metadata=vault.md
        )
    )
    assert len(answers) == len(pans)
    assert all(a.WhichOneof("result") == "response" for a in answers)
    tokens = [a.response.token for a in answers]
    assert [t[-4:] for t in tokens] == [p[-4:] for p in pans]
    assert all(a.response.created for a in answers)
    # The tokens reveal their own PANs, in order, over the other stream.
    revealed = await _all(
        vault.stub.DetokenizeStream(
            iter([pb.DetokenizeStreamRequest(token=t, purpose=PURPOSE) for t in tokens]),
            metadata=vault.md,
        )
    )
    assert [r.response.text for r in revealed] == pans
    assert [r.response.token for r in revealed] == tokens
    assert vault.count_tokens() >= len(pans)


async def test_a_bad_item_mid_stream_gets_its_own_error_and_the_stream_goes_on(vault):
    good = "4242424242424242"
    requests = [
        tokenize_request("DATA_KIND_PAN", good),
        tokenize_request("DATA_KIND_PAN", "4242424242424241"),  # fails Luhn
        tokenize_request("DATA_KIND_EMAIL", "jo@example.com"),
        tokenize_request("DATA_KIND_UNSPECIFIED", "x"),
        tokenize_request("DATA_KIND_PAN", good, request_id="r-1"),
        tokenize_request("DATA_KIND_EMAIL", "other@example.com", request_id="r-1"),  # reused
        tokenize_request("DATA_KIND_PAN", good),
    ]
    answers = await _all(vault.stub.TokenizeStream(iter(requests), metadata=vault.md))
    kinds = [a.WhichOneof("result") for a in answers]
    assert kinds == ["response", "error", "response", "error", "response", "error", "response"]
    assert answers[1].error.code == INVALID
    assert _fields(answers[1].error) == ["text"]
    assert good[:-1] not in answers[1].error.message
    assert answers[3].error.code == INVALID
    assert _fields(answers[3].error) == ["kind"]
    assert _reason(answers[5].error) == "REQUEST_ID_REUSED"
    assert answers[6].response.token.endswith("4242")


async def test_detokenize_stream_errors_are_per_item(vault):
    token = (
        await vault.stub.Tokenize(
            tokenize_request("DATA_KIND_PAN", "4242424242424242"), metadata=vault.md
        )
    ).token
    requests = [
        pb.DetokenizeStreamRequest(token=token, purpose=PURPOSE),
        pb.DetokenizeStreamRequest(token="4000000000000002", purpose=PURPOSE),  # unknown
        pb.DetokenizeStreamRequest(token=token),  # no purpose
        pb.DetokenizeStreamRequest(token=token, purpose=PURPOSE),
    ]
    answers = await _all(vault.stub.DetokenizeStream(iter(requests), metadata=vault.md))
    assert answers[0].response.text == "4242424242424242"
    assert answers[1].error.code == NOT_FOUND
    assert answers[2].error.code == INVALID
    assert _fields(answers[2].error) == ["purpose"]
    assert answers[3].response.text == "4242424242424242"


async def test_streams_need_a_credential_and_their_scope(vault):
    request = tokenize_request("DATA_KIND_PAN", "4242424242424242")
    exc = await expect_code(
        _all(vault.stub.TokenizeStream(iter([request]))), grpc.StatusCode.UNAUTHENTICATED
    )
    assert error_info(exc).reason == "NO_CREDENTIAL"
    revealer = await vault.add_caller("revealer", ("detokenize",))
    exc = await expect_code(
        _all(vault.stub.TokenizeStream(iter([request]), metadata=revealer)),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    assert error_info(exc).reason == "MISSING_SCOPE"
    tokenizer = await vault.add_caller("tokenizer", ("tokenize",))
    token = (await vault.stub.Tokenize(request, metadata=tokenizer)).token
    reveal = pb.DetokenizeStreamRequest(token=token, purpose=PURPOSE)
    exc = await expect_code(
        _all(vault.stub.DetokenizeStream(iter([reveal]), metadata=tokenizer)),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    assert "4242424242424242" not in str(exc.details())
    answers = await _all(vault.stub.DetokenizeStream(iter([reveal]), metadata=revealer))
    assert answers[0].response.text == "4242424242424242"


async def test_the_reveal_rate_limit_applies_per_item(vault):
    token = (
        await vault.stub.Tokenize(
            tokenize_request("DATA_KIND_PAN", "4242424242424242"), metadata=vault.md
        )
    ).token
    md = await vault.add_caller("slow", ("detokenize",), reveal_rate=1.0, reveal_burst=2)
    reveal = pb.DetokenizeStreamRequest(token=token, purpose=PURPOSE)
    answers = await _all(vault.stub.DetokenizeStream(iter([reveal] * 4), metadata=md))
    assert [a.WhichOneof("result") for a in answers].count("response") == 2
    refused = [a.error for a in answers if a.WhichOneof("result") == "error"]
    assert [(e.code, _reason(e)) for e in refused] == [(EXHAUSTED, "REVEAL_RATE_EXCEEDED")] * 2


async def test_every_streamed_reveal_is_audited_like_a_unary_one(vault):
    tokens = [
        (
            await vault.stub.Tokenize(
                tokenize_request("DATA_KIND_EMAIL", f"jo{i}@example.com"), metadata=vault.md
            )
        ).token
        for i in range(3)
    ]
    answers = await _all(
        vault.stub.DetokenizeStream(
            iter([pb.DetokenizeStreamRequest(token=t, purpose=PURPOSE) for t in tokens]),
            metadata=(*vault.md, ("x-request-id", "stream-7")),
        )
    )
    assert [a.response.text for a in answers] == [f"jo{i}@example.com" for i in range(3)]
    rows = vault.sql(
        "SELECT tokens, purpose, caller, request_id, outcome FROM audit_log WHERE action = ?"
        " ORDER BY seq",
        (ACTION_REVEAL,),
    )
    assert sorted(r[0] for r in rows) == sorted(f'["{t}"]' for t in tokens)
    assert {(r[1], r[3], r[4]) for r in rows} == {(PURPOSE, "stream-7", "ok")}


async def test_a_client_that_stops_reading_stops_the_server(vault):
    """Flow control: with the client not reading, the server reveals only what fits in
    the in-flight window and grpc's HTTP/2 windows and buffers (about 4 MB here, ~1,100
    answers of 4 KB), then waits; reading resumes it."""
    text = "stream flow control " * 200  # ~4 KB per answer
    token = (
        await vault.stub.Tokenize(tokenize_request("DATA_KIND_TEXT", text), metadata=vault.md)
    ).token
    total = 3000
    reveal = pb.DetokenizeStreamRequest(token=token, purpose=PURPOSE)
    call = vault.stub.DetokenizeStream(metadata=vault.md)

    async def send() -> None:
        for _ in range(total):
            await call.write(reveal)
        await call.done_writing()

    sender = asyncio.ensure_future(send())
    before = -1
    for _ in range(50):  # until the server stops revealing (at most 5 s)
        await asyncio.sleep(0.1)
        now = _reveals(vault)
        if now == before:
            break
        before = now
    stalled = _reveals(vault)
    assert 0 < stalled <= total * 2 // 3, stalled
    assert not sender.done()
    answers = [answer async for answer in call]
    await sender
    assert len(answers) == total
    assert all(a.response.text == text.strip() or a.response.text == text for a in answers)
    assert _reveals(vault) == total


@pytest.mark.parametrize("method", ["TokenizeStream", "DetokenizeStream"])
async def test_an_undecodable_item_is_invalid_argument_and_the_stream_goes_on(vault, method):
    path = f"/vault.v1.TokenService/{method}"
    call = vault.channel.stream_stream(path, request_serializer=None, response_deserializer=None)(
        metadata=vault.md
    )
    await call.write(b"\xff\xff\xff")
    await call.done_writing()
    (raw,) = [answer async for answer in call]
    cls = pb.TokenizeStreamResponse if method == "TokenizeStream" else pb.DetokenizeStreamResponse
    answer = cls.FromString(raw)
    assert answer.error.code == INVALID
    assert _reason(answer.error) == "MALFORMED_REQUEST"


async def test_a_key_revoked_mid_stream_ends_the_stream(vault, monkeypatch):
    monkeypatch.setattr(apikeys, "CACHE_SECONDS", 0.0)
    md = await vault.add_caller("soon-revoked", ("tokenize",))
    call = vault.stub.TokenizeStream(metadata=md)
    await call.write(tokenize_request("DATA_KIND_EMAIL", "jo@example.com"))
    first = await call.read()
    assert first.response.token
    assert await vault.server.store.revoke_caller("soon-revoked", vault.clock.now())
    await call.write(tokenize_request("DATA_KIND_EMAIL", "other@example.com"))
    exc = await expect_code(call.read(), grpc.StatusCode.UNAUTHENTICATED)
    assert error_info(exc).reason == "REVOKED_CREDENTIAL"
    assert vault.sql("SELECT count(*) FROM tokens") == [(1,)]
