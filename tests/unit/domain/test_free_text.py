"""The free-text rule (no card number in text kept in clear), the subject-id normal form,
and GetToken's rule of who sees a token's subject and metadata; pure functions and the
Validator, no server."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import pytest

from vault.auth.policy import Caller
from vault.domain.describe import shows_owner
from vault.domain.model import DataKind
from vault.domain.validation import (
    PAN_IN_TEXT_REASON,
    Limits,
    TokenizeItem,
    Validator,
    check_free_text,
    free_text_violation,
    normalize_subject,
    recordable,
)
from vault.errors import InvalidArgumentError

DATA = Path(__file__).parents[2] / "data"
PAN_LIKE = json.loads((DATA / "kinds" / "pan_like.json").read_text(encoding="utf-8"))
READ_PATHS = json.loads((DATA / "api" / "read_paths.json").read_text(encoding="utf-8"))
CHECK = Validator(Limits())
CARD = "4242 4242 4242 4242"


def _digits(text: str) -> set[str]:
    """Every 4-digit window of the text's digits (what a leak check looks for)."""
    digits = "".join(c for c in unicodedata.normalize("NFKC", text) if c.isdigit())
    return {digits[i : i + 4] for i in range(len(digits) - 3)}


@pytest.mark.parametrize("text", PAN_LIKE["pan_like"])
def test_a_card_number_is_refused_naming_the_field_without_its_digits(text):
    violation = free_text_violation("purpose", text)
    assert violation is not None
    assert violation.field == "purpose"
    assert not any(w in violation.description for w in _digits(text))
    with pytest.raises(InvalidArgumentError) as refused:
        check_free_text("reason", f"case {text}")
    assert refused.value.reason == PAN_IN_TEXT_REASON
    assert [v.field for v in refused.value.violations] == ["reason"]
    assert not any(w in str(refused.value) for w in _digits(text))


@pytest.mark.parametrize("text", PAN_LIKE["not_pan_like"] + READ_PATHS["harmless_free_text"])
def test_other_text_passes(text):
    assert free_text_violation("purpose", text) is None
    check_free_text("purpose", text)


def test_recordable_keeps_only_bounded_text_without_a_card_number():
    assert recordable("refund #12", 256) == "refund #12"
    assert recordable(f"refund {CARD}", 256) == ""
    assert recordable("x" * 257, 256) == ""
    assert recordable("", 256) == ""


@pytest.mark.parametrize(
    ("typed", "normal"),
    [
        ("cust-1", "cust-1"),
        ("  cust-1 ", "cust-1"),
        ("\u00a0cust-1\u3000", "cust-1"),
        ("cust one", "cust one"),  # inner spaces are part of the id
        ("nun\u0303ez", "nu\u00f1ez"),  # NFD to NFC
        ("Cust-1", "Cust-1"),  # case is kept: ids are the caller's
        ("cust-1\n", "cust-1\n"),  # control characters are refused, not stripped
    ],
)
def test_subject_normal_form(typed, normal):
    assert normalize_subject(typed) == normal
    assert normalize_subject(normal) == normal  # idempotent


def test_subject_variants_of_the_data_file_are_one():
    assert (
        len(
            {normalize_subject(v) for k, v in READ_PATHS["subject_variants"].items() if k[0] != "_"}
        )
        == 1
    )


def test_the_validator_normalises_a_tokenize_items_subject_in_place():
    item = TokenizeItem(int(DataKind.EMAIL), "ana@example.com", subject=" nun\u0303ez ")
    CHECK.check_item(item)
    assert item.subject == "nu\u00f1ez"
    with pytest.raises(InvalidArgumentError) as blank:
        CHECK.check_item(TokenizeItem(int(DataKind.EMAIL), "ana@example.com", subject=" \u3000"))
    assert [v.field for v in blank.value.violations] == ["subject"]


def test_check_subject_returns_the_normal_form_and_refuses_blank_or_control():
    assert CHECK.check_subject("\u3000nun\u0303ez ") == "nu\u00f1ez"
    for bad in ("", "   ", "cust-1\n", "c" * 257):
        with pytest.raises(InvalidArgumentError) as refused:
            CHECK.check_subject(bad)
        assert [v.field for v in refused.value.violations] == ["subject"]


@pytest.mark.parametrize(
    ("item", "field"),
    [
        (
            TokenizeItem(int(DataKind.EMAIL), "a@b.example", request_id="r-4242424242424242"),
            "request_id",
        ),
        (
            TokenizeItem(int(DataKind.EMAIL), "a@b.example", metadata={"4242-4242-4242-4242": "v"}),
            "metadata",
        ),
    ],
)
def test_request_ids_and_metadata_keys_refuse_a_card_number(item, field):
    with pytest.raises(InvalidArgumentError) as refused:
        CHECK.check_item(item)
    assert [v.field for v in refused.value.violations] == [field]
    assert "4242" not in str(refused.value.violations)


def test_a_metadata_value_may_hold_anything_printable():
    item = TokenizeItem(int(DataKind.EMAIL), "a@b.example", metadata={"note": CARD})
    assert CHECK.check_item(item)[2] == "a@b.example"


def test_purposes_and_reasons_refuse_a_card_number():
    for check, field in ((CHECK.check_purpose, "purpose"), (CHECK.check_reason, "reason")):
        check("GDPR art. 17 request #4")
        with pytest.raises(InvalidArgumentError) as refused:
            check(f"refund to {CARD}")
        assert refused.value.reason == PAN_IN_TEXT_REASON
        assert [v.field for v in refused.value.violations] == [field]
    with pytest.raises(InvalidArgumentError) as missing:
        CHECK.check_reason("  ")
    assert missing.value.reason == "REASON_REQUIRED"


@pytest.mark.parametrize(
    ("scopes", "reveal_kinds", "kind", "shown"),
    [
        ({"reveal-masked"}, (), DataKind.PAN, False),
        ({"reveal-masked", "tokenize"}, (), DataKind.PAN, False),
        ({"reveal-masked", "subjects"}, (), DataKind.PAN, True),
        ({"detokenize"}, (), DataKind.PAN, True),
        ({"detokenize"}, ("PAN",), DataKind.PAN, True),
        ({"detokenize"}, ("EMAIL",), DataKind.PAN, False),
        ({"detokenize", "subjects"}, ("EMAIL",), DataKind.PAN, True),
    ],
)
def test_who_sees_a_tokens_subject_and_metadata(scopes, reveal_kinds, kind, shown):
    caller = Caller("c", "t", frozenset(scopes), frozenset(reveal_kinds))
    assert shows_owner(caller, kind) is shown
