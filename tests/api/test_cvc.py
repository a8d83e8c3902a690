"""CVC, ephemeral: held in server memory only, for a short TTL and a set number of
reveals, never written to the store (through a real server and channel)."""

from __future__ import annotations

import grpc
import pytest
from api_helpers import assert_invalid, assert_reason, expect_code, tokenize_request
from google.protobuf import duration_pb2

from vault.v1 import token_service_pb2 as pb

PURPOSE = "authorise payment"
CVC = "739"


async def _reveal(vault, token, md=None):
    return await vault.stub.Detokenize(
        pb.DetokenizeRequest(token=token, purpose=PURPOSE), metadata=md or vault.md
    )


@pytest.mark.parametrize("cvc", ["739", "4821"])
async def test_a_cvc_is_revealed_once_then_gone(vault, cvc):
    resp = await vault.stub.Tokenize(
        tokenize_request("CVC", cvc, subject="cust-9", metadata={"order": "o-1"}),
        metadata=vault.md,
    )
    assert resp.token.startswith("tok_")
    assert resp.masked == "***"
    assert resp.fingerprint == ""  # no fingerprint can index a 3-4 digit value
    assert resp.created
    info = await vault.stub.GetToken(pb.GetTokenRequest(token=resp.token), metadata=vault.md)
    assert (info.masked, info.subject, dict(info.metadata)) == ("***", "cust-9", {"order": "o-1"})
    assert cvc not in str(info)
    revealed = await _reveal(vault, resp.token)
    assert (revealed.text, revealed.subject) == (cvc, "cust-9")
    exc = await expect_code(_reveal(vault, resp.token), grpc.StatusCode.NOT_FOUND)
    assert cvc not in (exc.details() or "")
    # Nothing of it in the store, ever.
    assert vault.count_tokens() == 0


async def test_a_cvc_expires_after_its_ttl(vault):
    default = await vault.stub.Tokenize(tokenize_request("CVC", CVC), metadata=vault.md)
    short = tokenize_request("CVC", CVC)
    short.ttl.CopyFrom(duration_pb2.Duration(seconds=30))
    brief = await vault.stub.Tokenize(short, metadata=vault.md)
    vault.clock.advance(31)
    await expect_code(_reveal(vault, brief.token), grpc.StatusCode.NOT_FOUND)
    vault.clock.advance(600 - 31)  # the default TTL is 10 minutes
    await expect_code(_reveal(vault, default.token), grpc.StatusCode.NOT_FOUND)
    assert vault.server.vault.ephemeral.purge() == 0  # already dropped when found expired


async def test_cvc_rules_are_invalid_argument(vault):
    cases = [
        ({"deterministic": True}, "deterministic"),
        ({"request_id": "r-1"}, "request_id"),
    ]
    for extra, field in cases:
        request = tokenize_request("CVC", CVC)
        for key, value in extra.items():
            setattr(request, key, value)
        exc = await expect_code(
            vault.stub.Tokenize(request, metadata=vault.md), grpc.StatusCode.INVALID_ARGUMENT
        )
        assert_invalid(exc, field)
    long = tokenize_request("CVC", CVC)
    long.ttl.CopyFrom(duration_pb2.Duration(seconds=3601))
    exc = await expect_code(
        vault.stub.Tokenize(long, metadata=vault.md), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert_invalid(exc, "ttl")
    exc = await expect_code(
        vault.stub.Tokenize(tokenize_request("CVC", "12a"), metadata=vault.md),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert_invalid(exc, "text")
    assert len(vault.server.vault.ephemeral) == 0


async def test_a_batch_with_a_cvc_keeps_order_and_reveals_all_or_nothing(vault):
    batch = pb.BatchTokenizeRequest(
        requests=[
            tokenize_request("PAN", "4242424242424242"),
            tokenize_request("CVC", CVC),
            tokenize_request("CARD_EXPIRY", "12/30"),
        ]
    )
    pan, cvc, expiry = (await vault.stub.BatchTokenize(batch, metadata=vault.md)).responses
    assert cvc.masked == "***"
    assert vault.count_tokens() == 2
    # One unknown token in the batch: NOT_FOUND, and the CVC's reveal is not spent.
    await expect_code(
        vault.stub.BatchDetokenize(
            pb.BatchDetokenizeRequest(tokens=[cvc.token, "tok_" + "a" * 32], purpose=PURPOSE),
            metadata=vault.md,
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    out = await vault.stub.BatchDetokenize(
        pb.BatchDetokenizeRequest(tokens=[pan.token, cvc.token, expiry.token], purpose=PURPOSE),
        metadata=vault.md,
    )
    assert [r.text for r in out.responses] == ["4242424242424242", CVC, "12/2030"]
    # A bad item refuses the whole batch: no CVC is held either.
    bad = pb.BatchTokenizeRequest(
        requests=[tokenize_request("CVC", CVC), tokenize_request("PAN", "4242424242424241")]
    )
    await expect_code(
        vault.stub.BatchTokenize(bad, metadata=vault.md), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert len(vault.server.vault.ephemeral) == 0


async def test_a_failed_audit_write_does_not_spend_the_cvc(vault, monkeypatch):
    from vault.errors import StoreUnavailableError  # noqa: PLC0415

    resp = await vault.stub.Tokenize(tokenize_request("CVC", CVC), metadata=vault.md)

    async def broken(*_args, **_kwargs):
        raise StoreUnavailableError("injected")

    with monkeypatch.context() as patch:
        patch.setattr(vault.server.store, "append_audit", broken)
        exc = await expect_code(_reveal(vault, resp.token), grpc.StatusCode.UNAVAILABLE)
        assert_reason(exc, "AUDIT_UNAVAILABLE")
    assert (await _reveal(vault, resp.token)).text == CVC


async def test_cvc_is_per_tenant_and_kind_restricted(vault):
    resp = await vault.stub.Tokenize(tokenize_request("CVC", CVC), metadata=vault.md)
    other = await vault.add_caller("other", ("detokenize",), tenant="elsewhere")
    await expect_code(_reveal(vault, resp.token, other), grpc.StatusCode.NOT_FOUND)
    pans_only = await vault.add_caller("pans", ("detokenize",), reveal_kinds=("PAN",))
    exc = await expect_code(
        _reveal(vault, resp.token, pans_only), grpc.StatusCode.PERMISSION_DENIED
    )
    assert_reason(exc, "KIND_NOT_ALLOWED")
    # Neither refusal spent the one reveal.
    assert (await _reveal(vault, resp.token)).text == CVC


async def test_delete_drops_a_cvc(vault):
    resp = await vault.stub.Tokenize(tokenize_request("CVC", CVC), metadata=vault.md)
    await vault.stub.DeleteToken(pb.DeleteTokenRequest(token=resp.token), metadata=vault.md)
    await expect_code(_reveal(vault, resp.token), grpc.StatusCode.NOT_FOUND)


async def test_reveals_and_ttl_are_configurable(vault_factory):
    vault = await vault_factory(cvc_ttl=60.0, cvc_reveals=2)
    resp = await vault.stub.Tokenize(tokenize_request("CVC", CVC), metadata=vault.md)
    assert resp.expire_time.seconds == int(vault.clock.now() + 60)
    for _ in range(2):
        assert (await _reveal(vault, resp.token)).text == CVC
    await expect_code(_reveal(vault, resp.token), grpc.StatusCode.NOT_FOUND)
