"""Addresses as checkouts in GB, US, DE, JP and BR send them, through a real server: the
same data file as the domain rules (tests/data/kinds/addresses.json), both address
kinds, tokenize then reveal; the incomplete ones are INVALID_ARGUMENT naming the field."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest
from api_helpers import (
    PURPOSE,
    address_dict,
    assert_invalid,
    assert_no_leak,
    error_texts,
    expect_code,
    tokenize_request,
    violation_fields,
)

from vault.v1 import token_service_pb2 as pb

ADDRESSES = json.loads(
    (Path(__file__).parents[1] / "data" / "kinds" / "addresses.json").read_text(encoding="utf-8")
)
KINDS = ("BILLING_ADDRESS", "SHIPPING_ADDRESS")


def _wire(raw):
    """What a proto Address carries: every field, empty when absent."""
    return {
        "recipient": "",
        "lines": [],
        "locality": "",
        "administrative_area": "",
        "postal_code": "",
        "region_code": "",
    } | raw


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", ADDRESSES["valid"], ids=lambda case: case["id"])
async def test_country_address_round_trips(vault, case, kind):
    resp = await vault.stub.Tokenize(tokenize_request(kind, case["value"]), metadata=vault.md)
    assert resp.token.startswith("tok_")
    assert resp.masked == case["mask"]
    revealed = await vault.stub.Detokenize(
        pb.DetokenizeRequest(token=resp.token, purpose=PURPOSE), metadata=vault.md
    )
    assert revealed.WhichOneof("value") == "address"
    assert address_dict(revealed.address) == _wire(case["normalised"])


@pytest.mark.parametrize("case", ADDRESSES["invalid"], ids=lambda case: case["id"])
async def test_incomplete_address_is_refused_naming_the_field(vault, case):
    exc = await expect_code(
        vault.stub.Tokenize(tokenize_request("SHIPPING_ADDRESS", case["value"]), metadata=vault.md),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    for field in case["fields"]:
        assert_invalid(exc, field)
    assert sorted(violation_fields(exc)) == case["fields"]
    submitted = [v for v in case["value"].values() if isinstance(v, str)]
    assert_no_leak(error_texts(exc), submitted)
    assert vault.count_tokens() == 0
