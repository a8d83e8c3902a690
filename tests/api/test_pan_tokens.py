"""The shape of PAN tokens, checked over many random cards of every length, and the
retry on a taken token until a small token space runs out."""

from __future__ import annotations

import random
import re

import grpc
import pytest
from api_helpers import (
    PURPOSE,
    assert_invalid,
    assert_no_leak,
    assert_reason,
    error_texts,
    expect_code,
    format_number,
    load_data,
    luhn_complete,
    luhn_valid,
    random_pan,
    tokenize_request,
)

from vault.v1 import token_service_pb2 as pb
from vault.v1 import types_pb2

PER_LENGTH = 40
LENGTHS = range(12, 20)
PAN_FORMATS = ["UNSPECIFIED", "PAN_LAST4", "PAN_BIN_LAST4"]
RANDOM_TOKEN = re.compile(r"tok_[a-z2-7]{32}")


def test_helper_luhn_agrees_with_published_cards():
    cards = load_data("values.json")["cases"]
    pans = [c["normalised"] for c in cards if c["kind"] == "PAN"]
    assert pans
    assert all(luhn_valid(p) for p in pans)
    assert not luhn_valid("4242424242424241")


@pytest.mark.parametrize("fmt", PAN_FORMATS)
async def test_pan_token_shape_over_random_cards(vault, fmt):
    rng = random.Random(f"pan-shape-{fmt}")
    pans = [random_pan(rng, n) for n in LENGTHS for _ in range(PER_LENGTH)]
    assert all(luhn_valid(p) for p in pans)
    batch = pb.BatchTokenizeRequest(
        requests=[tokenize_request("PAN", p, format=format_number(fmt)) for p in pans]
    )
    resp = await vault.stub.BatchTokenize(batch, metadata=vault.md)
    assert len(resp.responses) == len(pans)
    tokens = [r.token for r in resp.responses]
    for pan, r in zip(pans, resp.responses, strict=True):
        token = r.token
        assert r.created is True
        assert len(token) == len(pan)
        assert token.isascii()
        assert token.isdigit()
        assert token[-4:] == pan[-4:]
        if fmt == "PAN_BIN_LAST4":
            assert token[:6] == pan[:6]
        assert not luhn_valid(token), "a PAN token must never pass Luhn"
        assert token != pan
        assert r.masked == "*" * (len(pan) - 4) + pan[-4:]
    assert len(set(tokens)) == len(tokens)
    assert vault.count_tokens() == len(pans)

    # Every token reveals its own card, in order.
    revealed = await vault.stub.BatchDetokenize(
        pb.BatchDetokenizeRequest(tokens=tokens, purpose=PURPOSE), metadata=vault.md
    )
    assert [r.text for r in revealed.responses] == pans
    # The stored format is the resolved one: UNSPECIFIED means PAN_LAST4 for a PAN.
    info = await vault.stub.GetToken(pb.GetTokenRequest(token=tokens[0]), metadata=vault.md)
    resolved = "PAN_LAST4" if fmt == "UNSPECIFIED" else fmt
    assert info.format == format_number(resolved)


async def test_last4_tokens_do_not_keep_the_bin(vault):
    """PAN_LAST4 fills everything but the last four from the CSPRNG: over many cards of
    one BIN, the first six digits of the token must not always equal the BIN."""
    rng = random.Random("last4-bin")
    pans = [
        luhn_complete("411111" + "".join(str(rng.randint(0, 9)) for _ in range(9)))
        for _ in range(50)
    ]
    resp = await vault.stub.BatchTokenize(
        pb.BatchTokenizeRequest(
            requests=[tokenize_request("PAN", p, format=format_number("PAN_LAST4")) for p in pans]
        ),
        metadata=vault.md,
    )
    heads = {r.token[:6] for r in resp.responses}
    assert heads != {"411111"}
    assert len(heads) > 40


async def test_random_format_for_a_pan(vault):
    pan = "4242424242424242"
    resp = await vault.stub.Tokenize(
        tokenize_request("PAN", pan, format=format_number("RANDOM")), metadata=vault.md
    )
    assert RANDOM_TOKEN.fullmatch(resp.token), resp.token
    assert resp.masked == "************4242"
    info = await vault.stub.GetToken(pb.GetTokenRequest(token=resp.token), metadata=vault.md)
    assert info.format == format_number("RANDOM")
    revealed = await vault.stub.Detokenize(
        pb.DetokenizeRequest(token=resp.token, purpose=PURPOSE), metadata=vault.md
    )
    assert revealed.text == pan


async def test_random_tokens_are_distinct(vault):
    batch = pb.BatchTokenizeRequest(
        requests=[tokenize_request("TEXT", "same note", format=format_number("RANDOM"))] * 200
    )
    resp = await vault.stub.BatchTokenize(batch, metadata=vault.md)
    tokens = [r.token for r in resp.responses]
    assert all(RANDOM_TOKEN.fullmatch(t) for t in tokens)
    assert len(set(tokens)) == 200


NON_PAN = [c for c in load_data("values.json")["cases"] if c["kind"] != "PAN"]
_FIRST_OF_KIND = list({c["kind"]: c for c in NON_PAN}.values())


@pytest.mark.parametrize("fmt", ["PAN_LAST4", "PAN_BIN_LAST4"])
@pytest.mark.parametrize("case", _FIRST_OF_KIND, ids=[c["kind"] for c in _FIRST_OF_KIND])
async def test_pan_formats_refused_for_other_kinds(vault, case, fmt):
    exc = await expect_code(
        vault.stub.Tokenize(
            tokenize_request(case["kind"], case["value"], format=format_number(fmt)),
            metadata=vault.md,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert_invalid(exc, "format")
    assert vault.count_tokens() == 0


def _same_bin_and_last4_pans(bin6: str, last4: str) -> list[str]:
    """Every Luhn-valid 12-digit PAN with this BIN and last four (one per first free digit)."""
    found = [
        f"{bin6}{a}{b}{last4}"
        for a in range(10)
        for b in range(10)
        if luhn_valid(f"{bin6}{a}{b}{last4}")
    ]
    assert len(found) == 10
    return found


async def test_bin_last4_collisions_retry_until_the_space_runs_out(vault):
    """12 digits with BIN and last four kept leave two free digits: 100 middles, of which
    the Luhn-valid ones are bumped, so at most 90 tokens exist. Every success must be a
    fresh token; the end must be RESOURCE_EXHAUSTED, never a duplicate or a crash."""
    bin6, last4 = "411111", "1234"
    pans = _same_bin_and_last4_pans(bin6, last4)
    fmt = format_number("PAN_BIN_LAST4")
    tokens: list[str] = []
    exhausted = None
    # The distinct cards first, then one card again and again (non-deterministic).
    sequence = pans + [pans[0]] * 200
    for pan in sequence:
        try:
            resp = await vault.stub.Tokenize(
                tokenize_request("PAN", pan, format=fmt), metadata=vault.md
            )
        except grpc.aio.AioRpcError as exc:
            exhausted = exc
            break
        assert resp.created is True
        tokens.append(resp.token)
    assert exhausted is not None, "91 tokens were handed out from a space of 90"
    assert exhausted.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, exhausted.details()
    assert_reason(exhausted, "TOKEN_SPACE_EXHAUSTED")
    assert_no_leak(error_texts(exhausted), pans)

    assert len(tokens) == len(set(tokens)), "a token was handed out twice"
    assert len(pans) <= len(tokens) <= 90
    for token in tokens:
        assert token[:6] == bin6
        assert token[-4:] == last4
        assert not luhn_valid(token)
    # Nothing half-done: exactly the acknowledged tokens are stored.
    stored = {t for (t,) in vault.sql("SELECT token FROM tokens")}
    assert stored == set(tokens)

    # The vault still serves: another BIN has room, and old tokens still reveal.
    other = await vault.stub.Tokenize(
        tokenize_request("PAN", "5555555555554444", format=fmt), metadata=vault.md
    )
    assert other.token[:6] == "555555"
    first = await vault.stub.Detokenize(
        pb.DetokenizeRequest(token=tokens[0], purpose=PURPOSE), metadata=vault.md
    )
    assert first.text == pans[0]


async def test_bin_last4_collisions_inside_one_batch(vault):
    """Thirty copies of one 12-digit card in one batch draw from 90 tokens: collisions
    inside the batch are certain, and every item must still get its own token."""
    pan = _same_bin_and_last4_pans("520082", "8210")[3]
    batch = pb.BatchTokenizeRequest(
        requests=[tokenize_request("PAN", pan, format=format_number("PAN_BIN_LAST4"))] * 30
    )
    resp = await vault.stub.BatchTokenize(batch, metadata=vault.md)
    tokens = [r.token for r in resp.responses]
    assert len(set(tokens)) == 30
    assert vault.count_tokens() == 30
    assert all(t[:6] == "520082" and t[-4:] == "8210" and not luhn_valid(t) for t in tokens)


def test_format_enum_names_are_the_contract():
    assert set(types_pb2.TokenFormat.keys()) == {
        "TOKEN_FORMAT_UNSPECIFIED",
        "TOKEN_FORMAT_RANDOM",
        "TOKEN_FORMAT_PAN_LAST4",
        "TOKEN_FORMAT_PAN_BIN_LAST4",
    }
