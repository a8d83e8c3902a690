"""UpdateToken through a real server: a value corrected in place, the token kept."""

from __future__ import annotations

import grpc
import pytest
from api_helpers import (
    PURPOSE,
    address,
    assert_invalid,
    assert_no_leak,
    assert_reason,
    error_texts,
    expect_code,
    revealed_value,
    tokenize_request,
)

from vault.clock import SystemClock
from vault.crypto.keyfile import KeyFileKek
from vault.domain import rotation
from vault.v1 import token_service_pb2 as pb

ADDRESS = {
    "recipient": "Carol Fixer",
    "lines": ["1 Old Street"],
    "locality": "Leeds",
    "postal_code": "LS1 1AA",
    "region_code": "GB",
}


async def _reveal(vault, token):
    return await vault.stub.Detokenize(
        pb.DetokenizeRequest(token=token, purpose=PURPOSE), metadata=vault.md
    )


def _row(vault, token):
    return vault.sql(
        "SELECT ciphertext, fingerprint, key_version FROM tokens WHERE token = ?", (token,)
    )[0]


@pytest.mark.parametrize("subject", ["", "cust-carol"])
async def test_update_keeps_the_token_and_changes_value_and_fingerprint(vault, subject):
    first = await vault.stub.Tokenize(
        tokenize_request("EMAIL", "carol@old.example", subject=subject, metadata={"a": "1"}),
        metadata=vault.md,
    )
    twin = await vault.stub.Tokenize(
        tokenize_request("EMAIL", "carol@new.example"), metadata=vault.md
    )
    resp = await vault.stub.UpdateToken(
        pb.UpdateTokenRequest(token=first.token, text="carol@NEW.example"), metadata=vault.md
    )
    assert resp.token == first.token
    assert resp.fingerprint != first.fingerprint
    assert resp.fingerprint == twin.fingerprint  # normalised like a tokenize
    assert resp.masked == "c***@new.example"
    revealed = await _reveal(vault, first.token)
    assert (revealed.text, revealed.subject, dict(revealed.metadata)) == (
        "carol@new.example",
        subject,
        {"a": "1"},
    )
    info = await vault.stub.GetToken(pb.GetTokenRequest(token=first.token), metadata=vault.md)
    assert info.fingerprint == resp.fingerprint
    audit = vault.sql("SELECT tokens, outcome FROM audit_log WHERE action = 'token.update'")
    assert audit == [(f'["{first.token}"]', "ok")]


async def test_update_replaces_metadata_only_when_asked(vault):
    first = await vault.stub.Tokenize(
        tokenize_request("BILLING_ADDRESS", ADDRESS, metadata={"a": "1"}), metadata=vault.md
    )
    moved = dict(ADDRESS, lines=["2 New Street"])
    await vault.stub.UpdateToken(
        pb.UpdateTokenRequest(
            token=first.token, address=address(moved), metadata={"b": "2"}, replace_metadata=True
        ),
        metadata=vault.md,
    )
    revealed = await _reveal(vault, first.token)
    assert revealed_value(revealed)["lines"] == ["2 New Street"]
    assert dict(revealed.metadata) == {"b": "2"}


async def test_a_deterministic_collision_is_refused_and_nothing_changes(vault):
    one = await vault.stub.Tokenize(
        tokenize_request("EMAIL", "dana@one.example", deterministic=True), metadata=vault.md
    )
    two = await vault.stub.Tokenize(
        tokenize_request("EMAIL", "dana@two.example", deterministic=True), metadata=vault.md
    )
    before = _row(vault, two.token)
    exc = await expect_code(
        vault.stub.UpdateToken(
            pb.UpdateTokenRequest(token=two.token, text="dana@one.example"), metadata=vault.md
        ),
        grpc.StatusCode.ALREADY_EXISTS,
    )
    assert_reason(exc, "DETERMINISTIC_COLLISION")
    assert_no_leak(error_texts(exc), ["dana@one.example"])
    assert _row(vault, two.token) == before
    assert (await _reveal(vault, two.token)).text == "dana@two.example"
    assert (await _reveal(vault, one.token)).text == "dana@one.example"
    outcome = vault.sql("SELECT outcome, reason FROM audit_log WHERE action = 'token.update'")
    assert outcome == [("error", "DETERMINISTIC_COLLISION")]


async def test_a_deterministic_token_moves_its_value(vault):
    one = await vault.stub.Tokenize(
        tokenize_request("EMAIL", "erin@one.example", deterministic=True), metadata=vault.md
    )
    await vault.stub.UpdateToken(
        pb.UpdateTokenRequest(token=one.token, text="erin@two.example"), metadata=vault.md
    )
    again = await vault.stub.Tokenize(
        tokenize_request("EMAIL", "erin@two.example", deterministic=True), metadata=vault.md
    )
    assert (again.token, again.created) == (one.token, False)
    fresh = await vault.stub.Tokenize(
        tokenize_request("EMAIL", "erin@one.example", deterministic=True), metadata=vault.md
    )
    assert fresh.created
    assert fresh.token != one.token


@pytest.mark.parametrize(
    ("kind", "value", "new", "field", "reason"),
    [
        ("PAN", "4111111111111111", ADDRESS, "address", None),  # wrong oneof for the kind
        ("EMAIL", "f@example.com", "not an email", "text", None),
        ("BILLING_ADDRESS", ADDRESS, "a text", "text", None),
        ("PAN", "4111111111111111", "4111111111111112", "text", None),  # Luhn fails
        ("PAN", "4111111111111111", "5555555555554444", "text", "TOKEN_SHAPE_MISMATCH"),
        ("EMAIL", "f@example.com", None, "text", None),
    ],
)
async def test_a_value_invalid_for_the_tokens_kind_is_refused(
    vault, kind, value, new, field, reason
):
    first = await vault.stub.Tokenize(tokenize_request(kind, value), metadata=vault.md)
    before = _row(vault, first.token)
    req = pb.UpdateTokenRequest(token=first.token)
    if isinstance(new, dict):
        req.address.CopyFrom(address(new))
    elif new is not None:
        req.text = new
    exc = await expect_code(
        vault.stub.UpdateToken(req, metadata=vault.md), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert_invalid(exc, field, reason)
    assert_no_leak(error_texts(exc), [new] if isinstance(new, str) else [])
    assert _row(vault, first.token) == before


async def test_a_pan_keeping_the_tokens_digits_can_be_corrected(vault):
    first = await vault.stub.Tokenize(
        tokenize_request("PAN", "4111111111111111"), metadata=vault.md
    )
    # Same length and last four, another card number (Luhn-valid).
    resp = await vault.stub.UpdateToken(
        pb.UpdateTokenRequest(token=first.token, text="4000000000061111"), metadata=vault.md
    )
    assert resp.masked.endswith("1111")
    assert (await _reveal(vault, first.token)).text == "4000000000061111"


async def test_cvc_and_unknown_tokens_are_refused(vault):
    cvc = await vault.stub.Tokenize(tokenize_request("CVC", "123"), metadata=vault.md)
    exc = await expect_code(
        vault.stub.UpdateToken(
            pb.UpdateTokenRequest(token=cvc.token, text="456"), metadata=vault.md
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert_reason(exc, "CVC_NOT_UPDATABLE")
    assert (await _reveal(vault, cvc.token)).text == "123"
    await expect_code(
        vault.stub.UpdateToken(
            pb.UpdateTokenRequest(token="tok_" + "a" * 32, text="x@example.com"), metadata=vault.md
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    await expect_code(
        vault.stub.UpdateToken(pb.UpdateTokenRequest(token="4111111111111111"), metadata=vault.md),
        grpc.StatusCode.NOT_FOUND,
    )


async def test_update_needs_the_tokenize_scope(vault):
    first = await vault.stub.Tokenize(tokenize_request("EMAIL", "g@example.com"), metadata=vault.md)
    md = await vault.add_caller("reader", ("detokenize", "subjects"))
    await expect_code(
        vault.stub.UpdateToken(
            pb.UpdateTokenRequest(token=first.token, text="h@example.com"), metadata=md
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    other = await vault.add_caller("other", ("tokenize",), tenant="other")
    await expect_code(
        vault.stub.UpdateToken(
            pb.UpdateTokenRequest(token=first.token, text="h@example.com"), metadata=other
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    assert (await _reveal(vault, first.token)).text == "g@example.com"


async def test_subject_values_survive_rotation_and_rewrap(vault):
    """The subject layer is inside the data-key layer: rewrap never needs a subject key."""
    resp = await vault.stub.Tokenize(
        tokenize_request("EMAIL", "rot@example.com", subject="cust-rot"), metadata=vault.md
    )
    store = vault.server.store
    kek = KeyFileKek.load(vault.server.config.master_key_path)
    await rotation.rotate(store, kek, SystemClock())
    await vault.server.keys.load()
    result = await rotation.rewrap(store, kek, SystemClock())
    assert (result.rewrapped, result.failed) == (1, 0)
    assert _row(vault, resp.token)[2] == 2
    assert (await _reveal(vault, resp.token)).text == "rot@example.com"
