"""Deterministic tokens (same tenant + kind + value → same token) and request_id retries."""

from __future__ import annotations

import asyncio

import grpc
from api_helpers import (
    PURPOSE,
    assert_invalid,
    expect_code,
    tokenize_request,
)

from vault.v1 import token_service_pb2 as pb


async def _tokenize(vault, kind, value, md=None, **extra):
    return await vault.stub.Tokenize(
        tokenize_request(kind, value, **extra), metadata=md or vault.md
    )


async def test_deterministic_pan_spellings_share_one_token(vault):
    first = await _tokenize(vault, "PAN", "4242 4242 4242 4242", deterministic=True)
    again = await _tokenize(vault, "PAN", "4242424242424242", deterministic=True)
    dashed = await _tokenize(vault, "PAN", " 4242-4242-4242-4242 ", deterministic=True)
    assert first.created is True
    assert again.created is False
    assert dashed.created is False
    assert first.token == again.token == dashed.token
    assert first.fingerprint == again.fingerprint == dashed.fingerprint
    assert first.masked == again.masked == "************4242"
    assert vault.count_tokens() == 1
    info = await vault.stub.GetToken(pb.GetTokenRequest(token=first.token), metadata=vault.md)
    assert info.deterministic is True


async def test_deterministic_email_domain_case_is_one_value(vault):
    first = await _tokenize(vault, "EMAIL", "Jane.Doe@EXAMPLE.com", deterministic=True)
    again = await _tokenize(vault, "EMAIL", "Jane.Doe@example.COM", deterministic=True)
    assert (first.token, first.created) == (again.token, True)
    assert again.created is False
    # The local part is case-sensitive (RFC 5321): another address, another token.
    other = await _tokenize(vault, "EMAIL", "jane.doe@example.com", deterministic=True)
    assert other.created is True
    assert other.token != first.token
    assert other.fingerprint != first.fingerprint
    assert vault.count_tokens() == 2


async def test_deterministic_address_normal_form(vault):
    a = {"recipient": " Jane  Doe", "lines": ["1 High Street "], "locality": "London",
         "postal_code": "sw1a 1aa", "region_code": "gb"}  # fmt: skip
    b = {"recipient": "Jane  Doe", "lines": ["1 High Street"], "locality": "London",
         "postal_code": "SW1A 1AA", "region_code": "GB"}  # fmt: skip
    first = await _tokenize(vault, "BILLING_ADDRESS", a, deterministic=True)
    again = await _tokenize(vault, "BILLING_ADDRESS", b, deterministic=True)
    assert again.token == first.token
    assert again.created is False
    # Same address, other kind: a shipping address is its own token.
    shipping = await _tokenize(vault, "SHIPPING_ADDRESS", b, deterministic=True)
    assert shipping.token != first.token
    assert shipping.created is True


async def test_deterministic_is_per_kind(vault):
    text = await _tokenize(vault, "TEXT", "12345678", deterministic=True)
    account = await _tokenize(vault, "BANK_ACCOUNT", "12345678", deterministic=True)
    assert text.token != account.token
    assert text.fingerprint != account.fingerprint
    assert account.created is True


async def test_tenants_get_their_own_tokens_and_fingerprints(vault):
    acme = await vault.add_caller("acme-app", tenant="acme")
    pan = "4012888888881881"
    mine = await _tokenize(vault, "PAN", pan, deterministic=True)
    theirs = await _tokenize(vault, "PAN", pan, md=acme, deterministic=True)
    assert theirs.created is True
    assert theirs.token != mine.token
    assert theirs.fingerprint != mine.fingerprint
    # Each tenant's deterministic lookup still finds its own token.
    theirs_again = await _tokenize(vault, "PAN", pan, md=acme, deterministic=True)
    assert (theirs_again.token, theirs_again.created) == (theirs.token, False)
    mine_again = await _tokenize(vault, "PAN", pan, deterministic=True)
    assert (mine_again.token, mine_again.created) == (mine.token, False)
    # And each tenant reveals its own.
    revealed = await vault.stub.Detokenize(
        pb.DetokenizeRequest(token=theirs.token, purpose=PURPOSE), metadata=acme
    )
    assert revealed.text == pan


async def test_non_deterministic_gives_new_tokens_with_one_fingerprint(vault):
    responses = [await _tokenize(vault, "PAN", "5555 5555 5555 4444") for _ in range(5)]
    assert all(r.created for r in responses)
    assert len({r.token for r in responses}) == 5
    assert len({r.fingerprint for r in responses}) == 1
    assert vault.count_tokens() == 5
    # A deterministic call does not adopt one of the non-deterministic tokens.
    det = await _tokenize(vault, "PAN", "5555555555554444", deterministic=True)
    assert det.created is True
    assert det.token not in {r.token for r in responses}
    assert det.fingerprint == responses[0].fingerprint


async def test_concurrent_deterministic_tokenize_yields_one_token(vault):
    calls = [
        _tokenize(
            vault, "PAN", "4000 0566 5566 5556" if i % 2 else "4000056655665556", deterministic=True
        )
        for i in range(50)
    ]
    responses = await asyncio.gather(*calls)
    assert len({r.token for r in responses}) == 1
    assert sum(r.created for r in responses) == 1
    assert vault.count_tokens() == 1


async def test_request_id_retry_returns_the_first_token(vault):
    first = await _tokenize(vault, "EMAIL", "jane@example.org", request_id="order-77:email")
    retry = await _tokenize(vault, "EMAIL", "jane@example.org", request_id="order-77:email")
    assert first.created is True
    assert retry.created is False
    assert retry.token == first.token
    assert retry.fingerprint == first.fingerprint
    assert vault.count_tokens() == 1
    # Another request id is another token.
    other = await _tokenize(vault, "EMAIL", "jane@example.org", request_id="order-78:email")
    assert other.created is True
    assert other.token != first.token


async def test_concurrent_request_id_retries_yield_one_token(vault):
    calls = [
        _tokenize(vault, "PAN", "4111111111111111", request_id="checkout-9f2c") for _ in range(20)
    ]
    responses = await asyncio.gather(*calls)
    assert len({r.token for r in responses}) == 1
    assert sum(r.created for r in responses) == 1
    assert vault.count_tokens() == 1


async def test_request_id_reused_for_another_value_is_refused(vault):
    first = await _tokenize(vault, "PAN", "4242424242424242", request_id="pay-001")
    exc = await expect_code(
        _tokenize(vault, "PAN", "5555555555554444", request_id="pay-001"),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert_invalid(exc, "request_id", reason="REQUEST_ID_REUSED")
    assert "5555555555554444" not in (exc.details() or "")
    assert vault.count_tokens() == 1
    # Reuse with the same value but other request fields is a reuse too.
    exc = await expect_code(
        _tokenize(vault, "PAN", "4242424242424242", request_id="pay-001", subject="someone-else"),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert_invalid(exc, "request_id", reason="REQUEST_ID_REUSED")
    # The first token is untouched.
    revealed = await vault.stub.Detokenize(
        pb.DetokenizeRequest(token=first.token, purpose=PURPOSE), metadata=vault.md
    )
    assert revealed.text == "4242424242424242"
    assert revealed.subject == ""


async def test_request_id_is_per_tenant(vault):
    acme = await vault.add_caller("acme-app", tenant="acme")
    mine = await _tokenize(vault, "TEXT", "gift message", request_id="rq-1")
    theirs = await _tokenize(vault, "TEXT", "a different note", md=acme, request_id="rq-1")
    assert theirs.created is True
    assert theirs.token != mine.token
    # Same value too: still independent.
    acme2 = await vault.add_caller("acme-app-2", tenant="acme2")
    same = await _tokenize(vault, "TEXT", "gift message", md=acme2, request_id="rq-1")
    assert same.created is True
    assert same.token != mine.token
    assert vault.count_tokens() == 3


async def test_request_id_answered_by_a_deterministic_hit_is_still_reserved(vault):
    """README: "the same id with a different request is INVALID_ARGUMENT
    (REQUEST_ID_REUSED)". That must hold also when the id's first call was answered with
    an existing deterministic token (nothing new was inserted for it)."""
    first = await _tokenize(vault, "PAN", "4242424242424242", deterministic=True)
    hit = await _tokenize(vault, "PAN", "4242424242424242", deterministic=True, request_id="pay-7")
    assert (hit.token, hit.created) == (first.token, False)
    retry = await _tokenize(
        vault, "PAN", "4242424242424242", deterministic=True, request_id="pay-7"
    )
    assert (retry.token, retry.created) == (first.token, False)
    exc = await expect_code(
        _tokenize(vault, "PAN", "5555555555554444", request_id="pay-7"),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert_invalid(exc, "request_id", reason="REQUEST_ID_REUSED")
    assert vault.count_tokens() == 1
