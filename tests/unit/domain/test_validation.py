"""Validation in one place: all violations of an item at once, fields named; one rule
of when a value takes a PAN token; batch sizes, purposes, subjects, corrections."""

from __future__ import annotations

import pytest

from vault.domain.model import DataKind, TokenFormat
from vault.domain.validation import Limits, TokenizeItem, Validator, has_control, uses_pan_token
from vault.errors import InvalidArgumentError

PAN = "4242424242424242"
CHECK = Validator(Limits(max_batch=3, max_purpose_chars=8))


def _fields(exc: pytest.ExceptionInfo[InvalidArgumentError]) -> list[str]:
    return [v.field for v in exc.value.violations]


def test_a_pan_is_normalised_and_gets_its_default_format():
    kind, fmt, value = CHECK.check_item(TokenizeItem(int(DataKind.PAN), "4242 4242-4242 4242"))
    assert (kind, fmt, value) == (DataKind.PAN, TokenFormat.PAN_LAST4, PAN)


def test_every_violation_of_an_item_is_reported_at_once():
    item = TokenizeItem(
        int(DataKind.PAN),
        "4242424242424241",  # fails Luhn
        metadata={"bad key!": "v"},
        ttl_seconds=-1.0,
        request_id="has space",
    )
    with pytest.raises(InvalidArgumentError) as bad:
        CHECK.check_item(item)
    assert _fields(bad) == ["text", "metadata", "ttl", "request_id"]


def test_a_cvc_refuses_deterministic_request_id_and_a_long_ttl():
    item = TokenizeItem(
        int(DataKind.CVC), "123", deterministic=True, request_id="r", ttl_seconds=7200.0
    )
    with pytest.raises(InvalidArgumentError) as bad:
        CHECK.check_item(item)
    assert _fields(bad) == ["deterministic", "request_id", "ttl"]


def test_unknown_kind_and_format_are_named():
    with pytest.raises(InvalidArgumentError) as bad:
        CHECK.check_item(TokenizeItem(0, "x"))
    assert _fields(bad) == ["kind"]
    with pytest.raises(InvalidArgumentError) as bad:
        CHECK.check_item(TokenizeItem(int(DataKind.PAN), PAN, token_format=99))
    assert _fields(bad) == ["format"]


def test_the_one_pan_token_rule():
    assert uses_pan_token(DataKind.PAN, TokenFormat.PAN_LAST4, PAN)
    assert uses_pan_token(DataKind.PAN, TokenFormat.PAN_BIN_LAST4, PAN)
    assert not uses_pan_token(DataKind.PAN, TokenFormat.RANDOM, PAN)
    assert not uses_pan_token(DataKind.TEXT, TokenFormat.PAN_LAST4, PAN)
    assert not uses_pan_token(DataKind.PAN, TokenFormat.PAN_LAST4, None)


def test_batch_size_purpose_and_subject_limits():
    CHECK.check_batch_size(3, "tokens")
    for n in (0, 4):
        with pytest.raises(InvalidArgumentError) as bad:
            CHECK.check_batch_size(n, "tokens")
        assert _fields(bad) == ["tokens"]
    CHECK.check_purpose("refund")
    with pytest.raises(InvalidArgumentError) as bad:
        CHECK.check_purpose("  ")
    assert bad.value.reason == "PURPOSE_REQUIRED"
    for purpose in ("far too long", "a\x00b"):
        with pytest.raises(InvalidArgumentError):
            CHECK.check_purpose(purpose)
    with pytest.raises(InvalidArgumentError):
        CHECK.check_subject("")
    assert has_control("a\tb")
    assert not has_control("Zoë")


def test_a_pan_correction_must_keep_the_digits_the_token_shows():
    token = "4242420000014242"
    other = "4000000000024242"  # same last four, another BIN
    assert CHECK.check_correction(DataKind.PAN, TokenFormat.PAN_LAST4, token, other, None)
    with pytest.raises(InvalidArgumentError) as bad:
        CHECK.check_correction(DataKind.PAN, TokenFormat.PAN_BIN_LAST4, token, other, None)
    assert bad.value.reason == "TOKEN_SHAPE_MISMATCH"
    with pytest.raises(InvalidArgumentError) as bad:
        CHECK.check_correction(DataKind.EMAIL, TokenFormat.RANDOM, token, None, {"k": "\x01"})
    assert _fields(bad) == ["text", "metadata"]
