"""The data-kind rules, driven by the data files in tests/data/kinds/."""

from __future__ import annotations

import itertools
import json
import random
import re
from pathlib import Path

import pytest

from vault.domain import kinds
from vault.domain.kinds import (
    canonical_bytes,
    is_pan_shaped,
    luhn_valid,
    mask,
    new_pan_token,
    new_random_token,
    normalize,
    resolve_format,
    validate_token_string,
    value_from_canonical,
)
from vault.domain.model import ADDRESS_KINDS, Address, DataKind, TokenFormat
from vault.errors import InternalError, InvalidArgumentError

DATA = Path(__file__).parents[2] / "data" / "kinds"
SEED = 20240601
KINDS = [kind for kind in DataKind if kind != DataKind.UNSPECIFIED]
TEXT_KINDS = [kind for kind in KINDS if kind not in ADDRESS_KINDS]
PAN_FORMATS = [TokenFormat.PAN_LAST4, TokenFormat.PAN_BIN_LAST4]
RANDOM_TOKEN = re.compile(r"tok_[a-z2-7]{32}")


def _load(name):
    return json.loads((DATA / name).read_text(encoding="utf-8"))


def _build(raw):
    """A data-file value as the vault sees it (see "about" in each data file)."""
    if isinstance(raw, dict) and "repeat" in raw:
        return raw["repeat"] * raw["times"]
    if isinstance(raw, dict) and "concat" in raw:
        return "".join(_build(part) for part in raw["concat"])
    if isinstance(raw, dict):
        fields = {name: _build(part) for name, part in raw.items()}
        if isinstance(fields["lines"], list):
            fields["lines"] = tuple(fields["lines"])
        return Address(**fields)
    if isinstance(raw, list):
        return [_build(part) for part in raw]
    return raw


def _field(kind):
    return "address" if kind in ADDRESS_KINDS else "text"


def _strings(value):
    """Every piece of text a caller submitted in ``value``."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, Address):
        parts = [value.recipient, value.locality, value.administrative_area]
        parts += [value.postal_code, value.region_code]
        parts += list(value.lines) if isinstance(value.lines, tuple | list) else [value.lines]
        return [part for part in parts if isinstance(part, str)]
    return []


def _assert_value_free(error, value):
    """No description (nor the message) quotes the value, or four digits in a row of it."""
    texts = [str(error)] + [violation.description for violation in error.violations]
    for submitted in _strings(value):
        stripped = submitted.strip()
        # Shorter than three characters cannot be told apart from the fixed sentence text.
        if len(stripped) >= 3:
            assert all(stripped not in text for text in texts)
        for run in re.findall(r"\d{4,}", submitted):
            for start in range(len(run) - 3):
                assert all(run[start : start + 4] not in text for text in texts)


def _kind_cases(name):
    params = []
    for kind_name, cases in _load(name).items():
        if kind_name == "about":
            continue
        for index, case in enumerate(cases):
            case_id = f"{kind_name}-{index}-{case.get('why', '')}".rstrip("-")
            params.append(pytest.param(DataKind[kind_name], case, id=case_id))
    return params


CARDS = _load("cards.json")
VALID_CARDS = [pan for brand in CARDS["valid"].values() for pan in brand]
VALID = _kind_cases("valid.json")
INVALID = _kind_cases("invalid.json")
TOKENS = _load("tokens.json")
REGIONS = _load("region_codes.json")
CANONICAL = _load("canonical.json")["vectors"]


def test_public_api_is_exactly_the_brief():
    assert sorted(kinds.__all__) == [
        "canonical_bytes",
        "check_pan_format",
        "contains_pan_like",
        "is_pan_shaped",
        "luhn_valid",
        "mask",
        "new_pan_token",
        "new_random_token",
        "normalize",
        "resolve_format",
        "validate_token_string",
        "value_from_canonical",
    ]


def test_data_files_cover_every_kind():
    assert {param.values[0] for param in VALID} == set(KINDS)
    assert {param.values[0] for param in INVALID} == set(DataKind)


# --- normalize and mask ------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "case"), VALID)
def test_valid_value_is_normalised_and_masked(kind, case):
    normalised = normalize(kind, _build(case["value"]), _field(kind))
    assert normalised == _build(case["normalised"])
    assert mask(kind, normalised) == case["mask"]
    # Normal forms are fixed points: normalising again changes nothing.
    assert normalize(kind, normalised, _field(kind)) == normalised


@pytest.mark.parametrize(("kind", "case"), INVALID)
def test_invalid_value_is_refused_naming_every_field(kind, case):
    value = _build(case["value"])
    with pytest.raises(InvalidArgumentError) as caught:
        normalize(kind, value, _field(kind))
    assert sorted(violation.field for violation in caught.value.violations) == case["fields"]
    assert all(violation.description for violation in caught.value.violations)
    _assert_value_free(caught.value, value)


ADDRESSES = _load("addresses.json")
_ADDRESS_FIELDS = ("recipient", "lines", "locality", "administrative_area", "postal_code")


def _address_from(raw):
    """A data-file address: a missing field is empty, as on the wire."""
    fields = dict.fromkeys(_ADDRESS_FIELDS, "") | {"region_code": ""} | raw
    fields["lines"] = tuple(raw.get("lines", ()))
    return Address(**fields)


@pytest.mark.parametrize("kind", sorted(ADDRESS_KINDS))
@pytest.mark.parametrize("case", ADDRESSES["valid"], ids=lambda case: case["id"])
def test_country_address_form_is_accepted(case, kind):
    normalised = normalize(kind, _address_from(case["value"]), "address")
    assert normalised == _address_from(case["normalised"])
    assert mask(kind, normalised) == case["mask"]
    assert value_from_canonical(kind, canonical_bytes(kind, normalised)) == normalised
    assert normalize(kind, normalised, "address") == normalised


@pytest.mark.parametrize("kind", sorted(ADDRESS_KINDS))
@pytest.mark.parametrize("case", ADDRESSES["invalid"], ids=lambda case: case["id"])
def test_incomplete_country_address_is_refused(case, kind):
    address = _address_from(case["value"])
    with pytest.raises(InvalidArgumentError) as caught:
        normalize(kind, address, "address")
    assert sorted(v.field for v in caught.value.violations) == case["fields"]
    _assert_value_free(caught.value, address)


def test_every_country_of_the_brief_has_a_form():
    regions = {case["id"].split("-")[0] for case in ADDRESSES["valid"]}
    assert {"GB", "US", "DE", "JP", "BR"} <= regions


def test_unknown_kind_number_is_refused_on_kind():
    with pytest.raises(InvalidArgumentError) as caught:
        normalize(99, "hello", "text")  # type: ignore[arg-type]
    assert [(v.field, v.description) for v in caught.value.violations] == [
        ("kind", "is not a known data kind")
    ]


def test_sub_field_paths_follow_the_given_field():
    address = Address("R" * 201, ("1 High Street", ""), "", "", "", "ZZ")
    with pytest.raises(InvalidArgumentError) as caught:
        normalize(DataKind.BILLING_ADDRESS, address, "requests[3].address")
    assert sorted(v.field for v in caught.value.violations) == [
        "requests[3].address.lines[1]",
        "requests[3].address.recipient",
        "requests[3].address.region_code",
    ]


def test_pan_violations_are_fixed_sentences():
    with pytest.raises(InvalidArgumentError) as luhn:
        normalize(DataKind.PAN, "4242424242424241", "text")
    assert [v.description for v in luhn.value.violations] == ["fails the Luhn check"]
    with pytest.raises(InvalidArgumentError) as short:
        normalize(DataKind.PAN, "42424242", "text")
    assert [v.description for v in short.value.violations] == ["must be 12 to 19 digits"]


@pytest.mark.parametrize("pan", VALID_CARDS)
def test_public_test_card_is_accepted(pan):
    assert luhn_valid(pan)
    assert normalize(DataKind.PAN, pan, "text") == pan
    assert mask(DataKind.PAN, pan) == "*" * (len(pan) - 4) + pan[-4:]


@pytest.mark.parametrize("case", CARDS["accepted_spellings"], ids=lambda case: case["value"])
def test_public_test_card_spelling_is_normalised(case):
    assert normalize(DataKind.PAN, case["value"], "text") == case["normalised"]


@pytest.mark.parametrize("case", CARDS["invalid"], ids=lambda case: case["why"])
def test_public_invalid_card_is_refused(case):
    with pytest.raises(InvalidArgumentError) as caught:
        normalize(DataKind.PAN, case["value"], "text")
    assert {v.field for v in caught.value.violations} == {"text"}
    _assert_value_free(caught.value, case["value"])


@pytest.mark.parametrize("code", REGIONS["assigned"])
def test_assigned_region_code_is_accepted_in_any_case(code):
    address = Address("Jane Doe", ("1 Main Street",), "", "", "", code.lower())
    assert normalize(DataKind.SHIPPING_ADDRESS, address, "address").region_code == code


@pytest.mark.parametrize("case", REGIONS["not_assigned"], ids=lambda case: case["code"])
def test_unassigned_region_code_is_refused(case):
    address = Address("Jane Doe", ("1 Main Street",), "", "", "", case["code"])
    with pytest.raises(InvalidArgumentError) as caught:
        normalize(DataKind.SHIPPING_ADDRESS, address, "address")
    assert [v.field for v in caught.value.violations] == ["address.region_code"]


def test_exactly_the_assigned_region_codes_are_accepted():
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    accepted, refused_fields = set(), []
    for first, second in itertools.product(letters, repeat=2):
        address = Address("J", ("1",), "", "", "", first + second)
        try:
            accepted.add(normalize(DataKind.BILLING_ADDRESS, address, "address").region_code)
        except InvalidArgumentError as refused:
            refused_fields.append([v.field for v in refused.violations])
    assert accepted == set(REGIONS["assigned"])
    assert len(accepted) == 249
    assert refused_fields == [["address.region_code"]] * (26 * 26 - 249)


# --- canonical bytes ---------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "case"), VALID)
def test_canonical_bytes_round_trip(kind, case):
    normalised = _build(case["normalised"])
    data = canonical_bytes(kind, normalised)
    assert isinstance(data, bytes)
    assert value_from_canonical(kind, data) == normalised
    if kind not in ADDRESS_KINDS:
        assert data == normalised.encode("utf-8")


@pytest.mark.parametrize("vector", CANONICAL, ids=lambda vector: vector["kind"])
def test_canonical_bytes_match_the_golden_vectors(vector):
    kind = DataKind[vector["kind"]]
    value = _build(vector["value"])
    assert canonical_bytes(kind, value).hex() == vector["hex"]
    assert value_from_canonical(kind, bytes.fromhex(vector["hex"])) == value


def _small_addresses():
    words = ["", "a", "ab"]
    line_sets = [()] + [(w,) for w in words] + list(itertools.product(words, repeat=2))
    for recipient, lines, locality, area, postal, region in itertools.product(
        words, line_sets, words[:2], words[:2], words[:2], words[:2]
    ):
        yield Address(recipient, lines, locality, area, postal, region)


def test_no_two_addresses_share_an_encoding():
    # Every address over a tiny alphabet, where shifting text between fields is easy.
    encodings = {}
    for address in _small_addresses():
        data = canonical_bytes(DataKind.BILLING_ADDRESS, address)
        assert encodings.setdefault(data, address) == address
        assert value_from_canonical(DataKind.BILLING_ADDRESS, data) == address
    assert len(encodings) == 3 * 13 * 16


@pytest.mark.parametrize(
    ("left", "right"),
    [
        (Address("J", ("a", "b"), "", "", "", "GB"), Address("J", ("ab",), "", "", "", "GB")),
        (Address("J", ("a",), "b", "", "", "GB"), Address("J", ("a", "b"), "", "", "", "GB")),
        (Address("Ja", ("b",), "", "", "", "GB"), Address("J", ("ab",), "", "", "", "GB")),
        (Address("J", ("a",), "", "x", "", "GB"), Address("J", ("a",), "x", "", "", "GB")),
        (Address("J", ("a",), "", "", "1", "GB"), Address("J", ("a",), "", "1", "", "GB")),
    ],
)
def test_field_boundaries_are_part_of_the_encoding(left, right):
    assert canonical_bytes(DataKind.BILLING_ADDRESS, left) != canonical_bytes(
        DataKind.BILLING_ADDRESS, right
    )


def _assert_malformed(kind, data):
    with pytest.raises(InternalError) as caught:
        value_from_canonical(kind, data)
    assert caught.value.message == "stored value is malformed"
    # The codec's own message would quote the bytes: it must not ride along as context.
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None or caught.value.__suppress_context__


def test_truncated_or_extended_address_is_malformed():
    address = Address("Zoë", ("1 High Street", "Flat 2"), "London", "", "SW1A 1AA", "GB")
    data = canonical_bytes(DataKind.BILLING_ADDRESS, address)
    for end in range(len(data)):
        _assert_malformed(DataKind.BILLING_ADDRESS, data[:end])
    _assert_malformed(DataKind.BILLING_ADDRESS, data + b"\x00")


def test_bad_utf8_is_malformed():
    _assert_malformed(DataKind.TEXT, b"ok\xffok")
    _assert_malformed(DataKind.PAN, b"\xc3")
    bad_field = b"\x00\x00\x00\x01\xff"
    _assert_malformed(DataKind.SHIPPING_ADDRESS, bad_field)
    # A huge line count with no lines behind it fails at once instead of looping.
    _assert_malformed(
        DataKind.SHIPPING_ADDRESS, b"\x00\x00\x00\x01J" + b"\xff\xff\xff\xff" + b"\x00" * 8
    )


def test_value_of_the_wrong_shape_is_an_internal_error():
    address = Address("J", ("a",), "", "", "", "GB")
    for call in (
        lambda: canonical_bytes(DataKind.PAN, address),
        lambda: canonical_bytes(DataKind.BILLING_ADDRESS, "4242424242424242"),
        lambda: canonical_bytes(DataKind.UNSPECIFIED, "x"),
        lambda: mask(DataKind.PAN, address),
        lambda: mask(DataKind.UNSPECIFIED, "x"),
        lambda: value_from_canonical(DataKind.UNSPECIFIED, b"x"),
    ):
        with pytest.raises(InternalError):
            call()


def test_unencodable_text_error_does_not_quote_it():
    with pytest.raises(InternalError) as caught:
        canonical_bytes(DataKind.TEXT, "ab\ud800cd")
    assert "\ud800" not in str(caught.value)
    assert caught.value.__suppress_context__


# --- formats and tokens ------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_resolve_format_per_kind(kind):
    default = TokenFormat.PAN_LAST4 if kind == DataKind.PAN else TokenFormat.RANDOM
    assert resolve_format(kind, TokenFormat.UNSPECIFIED) == default
    assert resolve_format(kind, TokenFormat.RANDOM) == TokenFormat.RANDOM
    for fmt in PAN_FORMATS:
        if kind == DataKind.PAN:
            assert resolve_format(kind, fmt) == fmt
        else:
            with pytest.raises(InvalidArgumentError) as caught:
                resolve_format(kind, fmt)
            assert [(v.field, v.description) for v in caught.value.violations] == [
                ("format", "PAN formats apply only to DATA_KIND_PAN")
            ]


@pytest.mark.parametrize("number", [-1, 4, 99])
def test_unknown_format_number_is_refused(number):
    with pytest.raises(InvalidArgumentError) as caught:
        resolve_format(DataKind.PAN, number)
    assert [v.field for v in caught.value.violations] == ["format"]


def _reference_luhn_sum(digits):
    # The textbook algorithm, written independently of kinds.luhn_valid.
    total = 0
    for position, char in enumerate(reversed(digits)):
        digit = int(char)
        if position % 2:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total


def _random_pan(rng, length):
    body = "".join(rng.choice("0123456789") for _ in range(length - 1))
    return body + str(-_reference_luhn_sum(body + "0") % 10)


def test_luhn_valid_agrees_with_the_textbook_algorithm():
    rng = random.Random(SEED)
    for _ in range(3000):
        digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 25)))
        assert luhn_valid(digits) == (_reference_luhn_sum(digits) % 10 == 0)
    assert not luhn_valid("")
    assert not luhn_valid("4242 4242 4242 4242")
    assert not luhn_valid("\uff10\uff10")  # full-width zeros


@pytest.mark.parametrize("fmt", PAN_FORMATS, ids=lambda fmt: fmt.name)
@pytest.mark.parametrize("length", range(12, 20))
def test_pan_token_properties(length, fmt):
    rng = random.Random(SEED + length)
    kept_head = 6 if fmt == TokenFormat.PAN_BIN_LAST4 else 0
    tokens = set()
    for _ in range(2000):
        pan = _random_pan(rng, length)
        assert luhn_valid(pan)
        token = new_pan_token(pan, fmt, rng.randrange)
        assert len(token) == length
        assert token.isascii()
        assert token.isdigit()
        assert token[-4:] == pan[-4:]
        assert token[:kept_head] == pan[:kept_head]
        assert _reference_luhn_sum(token) % 10 != 0
        assert not luhn_valid(token)
        assert token != pan
        assert is_pan_shaped(token)
        tokens.add(token)
    # The free digits really are drawn: 2000 tokens are (nearly) all different.
    assert len(tokens) > 1900


def test_pan_token_that_would_pass_luhn_has_its_last_free_digit_bumped():
    pan = "4242424242424242"
    # Find the free digits that would make a Luhn-valid token, and force them.
    middle = next(f"{n:012d}" for n in range(1000) if luhn_valid(f"{n:012d}" + pan[-4:]))
    calls = []

    def forced(bound):
        calls.append(bound)
        return int(middle)

    token = new_pan_token(pan, TokenFormat.PAN_LAST4, forced)
    assert calls == [10**12]  # one CSPRNG draw covers all twelve free digits
    assert token == middle[:-1] + str((int(middle[-1]) + 1) % 10) + pan[-4:]
    assert not luhn_valid(token)


def test_pan_token_refuses_what_it_cannot_tokenize():
    with pytest.raises(InternalError):
        new_pan_token("4242424242424242", TokenFormat.RANDOM)
    with pytest.raises(InternalError):
        new_pan_token("4242424242424241", TokenFormat.PAN_LAST4)  # not Luhn-valid
    with pytest.raises(InternalError):
        new_pan_token("4242 4242 4242 4242", TokenFormat.PAN_LAST4)  # not normalised
    with pytest.raises(InternalError):
        new_pan_token("4242424242424242", TokenFormat.PAN_LAST4, lambda bound: bound)
    for pan, fmt in [("0000000000", TokenFormat.PAN_BIN_LAST4), ("00000", TokenFormat.PAN_LAST4)]:
        with pytest.raises(InvalidArgumentError) as caught:
            new_pan_token(pan, fmt)
        assert [(v.field, v.description) for v in caught.value.violations] == [
            ("format", "too few digits to tokenize in this format")
        ]


def test_random_token_is_160_bits_in_base32():
    assert new_random_token(lambda n: b"\x00" * n) == "tok_" + "a" * 32
    assert new_random_token(lambda n: b"\xff" * n) == "tok_" + "7" * 32
    requested = []
    new_random_token(lambda n: requested.append(n) or bytes(n))
    assert requested == [20]
    tokens = {new_random_token() for _ in range(1000)}
    assert len(tokens) == 1000
    assert all(RANDOM_TOKEN.fullmatch(token) for token in tokens)
    with pytest.raises(InternalError):
        new_random_token(lambda n: bytes(n - 1))


@pytest.mark.parametrize("case", TOKENS["valid"])
def test_token_this_vault_could_issue_is_accepted(case):
    token = _build(case["value"])
    assert validate_token_string(token, "token") is None
    assert is_pan_shaped(token) is case["pan_shaped"]


@pytest.mark.parametrize("case", TOKENS["invalid"], ids=lambda case: case["why"])
def test_token_this_vault_could_not_issue_is_refused(case):
    token = _build(case["value"])
    with pytest.raises(InvalidArgumentError) as caught:
        validate_token_string(token, "requests[0].token")
    assert [(v.field, v.description) for v in caught.value.violations] == [
        ("requests[0].token", "is not a token of this vault")
    ]
    _assert_value_free(caught.value, token)


def test_issued_tokens_pass_validation():
    rng = random.Random(SEED)
    for fmt in PAN_FORMATS:
        validate_token_string(new_pan_token(_random_pan(rng, 16), fmt), "token")
    validate_token_string(new_random_token(), "token")
    assert not is_pan_shaped(new_random_token())
