"""Every data kind through Tokenize, Detokenize, GetToken and DeleteToken on a real server."""

from __future__ import annotations

import grpc
import pytest
from api_helpers import (
    PURPOSE,
    assert_reason,
    expect_code,
    kind_number,
    load_data,
    revealed_value,
    tokenize_request,
)

from vault.clock import ManualClock
from vault.server import VaultServer
from vault.v1 import token_service_pb2 as pb
from vault.v1 import token_service_pb2_grpc, types_pb2

CASES = load_data("values.json")["cases"]
METADATA = {"order-id": "A-1001", "channel": "web.checkout"}
SUBJECT = "customer-314159"


def _strings(value: object) -> list[str]:
    """The string pieces of a value (an address's fields and lines, or the text)."""
    if isinstance(value, str):
        return [value]
    assert isinstance(value, dict)
    out: list[str] = []
    for piece in value.values():
        out += piece if isinstance(piece, list) else [piece]
    return out


def test_cases_cover_every_kind_but_cvc():
    kinds = {case["kind"] for case in CASES}
    every = {name.removeprefix("DATA_KIND_") for name in types_pb2.DataKind.keys()}  # noqa: SIM118
    assert kinds == every - {"UNSPECIFIED", "CVC"}


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
async def test_tokenize_detokenize_get(vault, case):
    kind = kind_number(case["kind"])
    resp = await vault.stub.Tokenize(
        tokenize_request(case["kind"], case["value"], metadata=METADATA, subject=SUBJECT),
        metadata=vault.md,
    )
    assert resp.created is True
    assert resp.masked == case["mask"]
    assert resp.fingerprint
    assert not resp.HasField("expire_time")
    if case["kind"] == "PAN":
        assert resp.token.isdigit()
        assert len(resp.token) == len(case["normalised"])
    else:
        assert resp.token.startswith("tok_")

    revealed = await vault.stub.Detokenize(
        pb.DetokenizeRequest(token=resp.token, purpose=PURPOSE), metadata=vault.md
    )
    assert revealed.kind == kind
    assert revealed_value(revealed) == case["normalised"]
    assert dict(revealed.metadata) == METADATA
    assert revealed.subject == SUBJECT
    assert revealed.token == resp.token

    info = await vault.stub.GetToken(pb.GetTokenRequest(token=resp.token), metadata=vault.md)
    assert info.token == resp.token
    assert info.kind == kind
    expected_format = "TOKEN_FORMAT_PAN_LAST4" if case["kind"] == "PAN" else "TOKEN_FORMAT_RANDOM"
    assert info.format == types_pb2.TokenFormat.Value(expected_format)
    assert info.masked == case["mask"]
    assert info.fingerprint == resp.fingerprint
    assert dict(info.metadata) == METADATA
    assert info.subject == SUBJECT
    assert info.deterministic is False
    assert info.create_time.ToSeconds() == int(vault.clock.now())
    assert not info.HasField("expire_time")
    assert info.key_version >= 1
    # No reveal: the value is nowhere in what GetToken sends (masked parts aside).
    wire = info.SerializeToString()
    for piece in _strings(case["normalised"]):
        if len(piece) >= 4:
            assert piece.encode() not in wire


def test_get_token_response_has_no_value_field():
    names = set(pb.GetTokenResponse.DESCRIPTOR.fields_by_name)
    assert not names & {"text", "address", "value"}


async def test_delete_then_not_found_everywhere(vault):
    resp = await vault.stub.Tokenize(
        tokenize_request("EMAIL", "jane@example.org", subject=SUBJECT), metadata=vault.md
    )
    other = await vault.stub.Tokenize(
        tokenize_request("EMAIL", "john@example.org"), metadata=vault.md
    )
    assert vault.count_tokens() == 2

    deleted = await vault.stub.DeleteToken(
        pb.DeleteTokenRequest(token=resp.token), metadata=vault.md
    )
    assert deleted == pb.DeleteTokenResponse()
    assert vault.sql("SELECT token FROM tokens") == [(other.token,)]

    for call in (
        vault.stub.Detokenize(
            pb.DetokenizeRequest(token=resp.token, purpose=PURPOSE), metadata=vault.md
        ),
        vault.stub.GetToken(pb.GetTokenRequest(token=resp.token), metadata=vault.md),
        vault.stub.DeleteToken(pb.DeleteTokenRequest(token=resp.token), metadata=vault.md),
    ):
        exc = await expect_code(call, grpc.StatusCode.NOT_FOUND)
        assert_reason(exc, "TOKEN_NOT_FOUND")

    # The other token is untouched.
    kept = await vault.stub.Detokenize(
        pb.DetokenizeRequest(token=other.token, purpose=PURPOSE), metadata=vault.md
    )
    assert kept.text == "john@example.org"


async def test_delete_pan_token(vault):
    resp = await vault.stub.Tokenize(tokenize_request("PAN", "4242424242424242"), metadata=vault.md)
    await vault.stub.DeleteToken(pb.DeleteTokenRequest(token=resp.token), metadata=vault.md)
    assert vault.count_tokens() == 0
    exc = await expect_code(
        vault.stub.Detokenize(
            pb.DetokenizeRequest(token=resp.token, purpose=PURPOSE), metadata=vault.md
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    assert_reason(exc, "TOKEN_NOT_FOUND")


async def test_tokens_survive_a_restart(vault_factory):
    """Acknowledged tokens are durable: a new server on the same data dir reveals them."""
    vault = await vault_factory()
    md = await vault.add_caller("checkout")
    responses = [
        await vault.stub.Tokenize(tokenize_request(c["kind"], c["value"]), metadata=md)
        for c in CASES
    ]
    config = vault.server.config
    await vault.channel.close()
    await vault.server.stop(grace=1.0)

    again = VaultServer(config, clock=ManualClock())
    await again.start()
    try:
        assert again.dev_key is None, "the dev key is created once, on an empty data dir"
        async with grpc.aio.insecure_channel(f"127.0.0.1:{again.port}") as channel:
            stub = token_service_pb2_grpc.TokenServiceStub(channel)
            revealed = await stub.BatchDetokenize(
                pb.BatchDetokenizeRequest(tokens=[r.token for r in responses], purpose=PURPOSE),
                metadata=md,
            )
    finally:
        await again.stop(grace=1.0)
    assert [revealed_value(r) for r in revealed.responses] == [c["normalised"] for c in CASES]
