"""BatchTokenize and BatchDetokenize: order kept, all or nothing, bounded."""

from __future__ import annotations

import random

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
    kind_number,
    load_data,
    random_pan,
    revealed_value,
    tokenize_request,
    violation_fields,
)

from vault.v1 import token_service_pb2 as pb

CASES = load_data("values.json")["cases"]
MISSING_TOKEN = "tok_" + "a" * 32


def _mixed_batch() -> pb.BatchTokenizeRequest:
    return pb.BatchTokenizeRequest(
        requests=[
            tokenize_request(c["kind"], c["value"], subject=f"cust-{i}", metadata={"i": str(i)})
            for i, c in enumerate(CASES)
        ]
    )


async def test_batch_keeps_order_over_mixed_kinds(vault):
    resp = await vault.stub.BatchTokenize(_mixed_batch(), metadata=vault.md)
    assert [r.masked for r in resp.responses] == [c["mask"] for c in CASES]
    assert all(r.created for r in resp.responses)
    tokens = [r.token for r in resp.responses]
    assert len(set(tokens)) == len(tokens)
    assert vault.count_tokens() == len(CASES)

    # Reveal in a shuffled order, with a duplicate: each answer is in request order.
    order = list(range(len(CASES)))
    random.Random("batch-order").shuffle(order)
    order.append(order[0])
    revealed = await vault.stub.BatchDetokenize(
        pb.BatchDetokenizeRequest(tokens=[tokens[i] for i in order], purpose=PURPOSE),
        metadata=vault.md,
    )
    assert len(revealed.responses) == len(order)
    for i, r in zip(order, revealed.responses, strict=True):
        case = CASES[i]
        assert r.token == tokens[i]
        assert r.kind == kind_number(case["kind"])
        assert revealed_value(r) == case["normalised"]
        assert r.subject == f"cust-{i}"
        assert dict(r.metadata) == {"i": str(i)}


async def test_batch_matches_single_calls(vault):
    """A batch item gets the same fingerprint and mask as the same value sent alone."""
    resp = await vault.stub.BatchTokenize(_mixed_batch(), metadata=vault.md)
    for case, item in zip(CASES, resp.responses, strict=True):
        single = await vault.stub.Tokenize(
            tokenize_request(case["kind"], case["value"]), metadata=vault.md
        )
        assert single.fingerprint == item.fingerprint
        assert single.masked == item.masked


async def test_deterministic_duplicates_inside_one_batch(vault):
    pan = "4242424242424242"
    batch = pb.BatchTokenizeRequest(
        requests=[
            tokenize_request("PAN", pan, deterministic=True),
            tokenize_request("EMAIL", "a@example.com"),
            tokenize_request("PAN", "4242 4242 4242 4242", deterministic=True),
        ]
    )
    resp = await vault.stub.BatchTokenize(batch, metadata=vault.md)
    first, _, dup = resp.responses
    assert first.token == dup.token
    assert first.created is True
    assert dup.created is False
    assert vault.count_tokens() == 2


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        (tokenize_request("PAN", "4242424242424241"), "text"),
        (tokenize_request("EMAIL", "not-an-email"), "text"),
        (tokenize_request("TEXT", None), "text"),
        (tokenize_request("UNSPECIFIED", "x"), "kind"),
        (
            tokenize_request(
                "BILLING_ADDRESS", {"recipient": "Jane", "lines": ["1 Road"], "region_code": "ZZ"}
            ),
            "address.region_code",
        ),
        (tokenize_request("PHONE", "+447911123456", subject="a\x00b"), "subject"),
        (
            tokenize_request("EMAIL", "jane@example.com", format=format_number("PAN_LAST4")),
            "format",
        ),
    ],
    ids=["pan-luhn", "email", "no-value", "no-kind", "region", "subject", "format"],
)
async def test_one_invalid_item_refuses_the_whole_batch(vault, bad, field):
    good = list(_mixed_batch().requests)
    position = 3
    requests = [*good[:position], bad, *good[position:]]
    exc = await expect_code(
        vault.stub.BatchTokenize(pb.BatchTokenizeRequest(requests=requests), metadata=vault.md),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert_invalid(exc, f"requests[{position}].{field}")
    # Only the bad item is named, by its index.
    assert all(f.startswith(f"requests[{position}].") for f in violation_fields(exc))
    assert vault.count_tokens() == 0
    assert_no_leak(error_texts(exc), [bad.text, bad.subject])


async def test_every_invalid_item_is_named(vault):
    requests = [
        tokenize_request("PAN", "4242424242424242"),
        tokenize_request("PAN", "4242424242424241"),
        tokenize_request("EMAIL", "jane@example.com"),
        tokenize_request("PHONE", "07911123456"),
    ]
    exc = await expect_code(
        vault.stub.BatchTokenize(pb.BatchTokenizeRequest(requests=requests), metadata=vault.md),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    fields = set(violation_fields(exc))
    assert fields == {"requests[1].text", "requests[3].text"}
    assert vault.count_tokens() == 0
    assert_no_leak(error_texts(exc), [r.text for r in requests])


async def test_request_id_reuse_inside_a_batch_stores_nothing(vault):
    """All or nothing: a batch refused for a reused request_id must not leave the other
    items stored (the caller got an error and has no tokens for them)."""
    await vault.stub.Tokenize(
        tokenize_request("PAN", "4242424242424242", request_id="pay-1"), metadata=vault.md
    )
    assert vault.count_tokens() == 1
    batch = pb.BatchTokenizeRequest(
        requests=[
            tokenize_request("EMAIL", "fresh@example.com"),
            tokenize_request("PAN", "5555555555554444", request_id="pay-1"),
        ]
    )
    exc = await expect_code(
        vault.stub.BatchTokenize(batch, metadata=vault.md), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert_invalid(exc, "requests[1].request_id", reason="REQUEST_ID_REUSED")
    assert vault.count_tokens() == 1, "the refused batch left a token behind"


async def test_request_id_twice_in_one_batch_with_different_values(vault):
    batch = pb.BatchTokenizeRequest(
        requests=[
            tokenize_request("TEXT", "first note", request_id="dup-id"),
            tokenize_request("TEXT", "second note", request_id="dup-id"),
        ]
    )
    exc = await expect_code(
        vault.stub.BatchTokenize(batch, metadata=vault.md), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert_invalid(exc, "requests[1].request_id", reason="REQUEST_ID_REUSED")
    assert vault.count_tokens() == 0, "the refused batch left a token behind"


async def test_batch_detokenize_with_an_unknown_token(vault):
    resp = await vault.stub.BatchTokenize(_mixed_batch(), metadata=vault.md)
    tokens = [r.token for r in resp.responses]
    for unknown in (MISSING_TOKEN, "4242000000004242"):
        exc = await expect_code(
            vault.stub.BatchDetokenize(
                pb.BatchDetokenizeRequest(
                    tokens=[*tokens[:2], unknown, *tokens[2:]], purpose=PURPOSE
                ),
                metadata=vault.md,
            ),
            grpc.StatusCode.NOT_FOUND,
        )
        assert_reason(exc, "TOKEN_NOT_FOUND")
        # No value of the known tokens comes back in the error.
        texts = error_texts(exc)
        pieces = []
        for c in CASES:
            n = c["normalised"]
            pieces += [n] if isinstance(n, str) else [n["recipient"], *n["lines"], n["postal_code"]]
        assert_no_leak(texts, pieces)
        assert "tokens[2]" in (exc.details() or "")


async def test_batch_detokenize_malformed_token_is_named(vault):
    ok = await vault.stub.Tokenize(tokenize_request("TEXT", "note"), metadata=vault.md)
    exc = await expect_code(
        vault.stub.BatchDetokenize(
            pb.BatchDetokenizeRequest(tokens=[ok.token, "tok_!!"], purpose=PURPOSE),
            metadata=vault.md,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert_invalid(exc, "tokens[1]")


async def test_empty_batches_are_refused(vault):
    exc = await expect_code(
        vault.stub.BatchTokenize(pb.BatchTokenizeRequest(), metadata=vault.md),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert_invalid(exc, "requests")
    exc = await expect_code(
        vault.stub.BatchDetokenize(pb.BatchDetokenizeRequest(purpose=PURPOSE), metadata=vault.md),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert_invalid(exc, "tokens")


async def test_batch_size_limit(vault):
    rng = random.Random("batch-limit")
    pans = [random_pan(rng, 16) for _ in range(1001)]
    too_many = pb.BatchTokenizeRequest(requests=[tokenize_request("PAN", p) for p in pans])
    exc = await expect_code(
        vault.stub.BatchTokenize(too_many, metadata=vault.md), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert_invalid(exc, "requests")
    assert vault.count_tokens() == 0

    # Exactly the limit is served.
    at_limit = pb.BatchTokenizeRequest(requests=too_many.requests[:1000])
    resp = await vault.stub.BatchTokenize(at_limit, metadata=vault.md)
    assert len(resp.responses) == 1000
    tokens = [r.token for r in resp.responses]

    exc = await expect_code(
        vault.stub.BatchDetokenize(
            pb.BatchDetokenizeRequest(tokens=[*tokens, tokens[0]], purpose=PURPOSE),
            metadata=vault.md,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert_invalid(exc, "tokens")
    revealed = await vault.stub.BatchDetokenize(
        pb.BatchDetokenizeRequest(tokens=tokens, purpose=PURPOSE), metadata=vault.md
    )
    assert [r.text for r in revealed.responses] == pans[:1000]


@pytest.mark.parametrize("purpose", ["", "   ", "\t\n"])
async def test_batch_detokenize_needs_a_purpose(vault, purpose):
    ok = await vault.stub.Tokenize(tokenize_request("TEXT", "note"), metadata=vault.md)
    exc = await expect_code(
        vault.stub.BatchDetokenize(
            pb.BatchDetokenizeRequest(tokens=[ok.token], purpose=purpose), metadata=vault.md
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert_invalid(exc, "purpose", reason="PURPOSE_REQUIRED")
