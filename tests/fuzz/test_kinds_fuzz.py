"""Every data kind's normaliser, on anything hypothesis can make: idempotent, refusing
only with the vault's InvalidArgumentError, never quoting the value (or a run of its
digits) in a violation."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import TEXT, addresses, expiries, pans

from vault.domain import kinds
from vault.domain.kinds import addresses as addresses_module
from vault.domain.model import ADDRESS_KINDS, Address, DataKind
from vault.errors import InvalidArgumentError

TEXT_KINDS = [k for k in DataKind if k is not DataKind.UNSPECIFIED and k not in ADDRESS_KINDS]
REGION_CODES = sorted(addresses_module.REGION_CODES)
_MIN_ECHO = 6

# Near-valid inputs of each kind, mixed with anything at all.
_NEAR = st.one_of(
    TEXT,
    pans(),
    expiries(),
    st.emails(),
    st.text("0123456789 -+()./", max_size=24),
    st.builds(lambda s: f"+{s}", st.text("0123456789 ", max_size=18)),
    st.text(st.characters(codec="utf-8"), max_size=60),
    st.sampled_from(["GB82WEST12345698765432", "gb82 west 1234 5698 7654 32", "12345678"]),
)
_ANY_FIELD = st.one_of(TEXT, st.text(st.characters(codec="utf-8"), max_size=30))
_ANY_ADDRESS = st.one_of(
    addresses(REGION_CODES),
    st.builds(
        Address,
        recipient=_ANY_FIELD,
        lines=st.lists(_ANY_FIELD, max_size=7).map(tuple),
        locality=_ANY_FIELD,
        administrative_area=_ANY_FIELD,
        postal_code=_ANY_FIELD,
        region_code=st.one_of(_ANY_FIELD, st.sampled_from(REGION_CODES)),
    ),
)
_MORE = settings(max_examples=settings.default.max_examples * 10)


def _submitted(value: object) -> list[str]:
    if isinstance(value, Address):
        return [value.recipient, *value.lines, value.locality, value.administrative_area]
    return [str(value)]


def assert_no_echo(exc: InvalidArgumentError, value: object) -> None:
    descriptions = " ".join(v.description for v in exc.violations) + str(exc)
    squeezed = re.sub(r"[ \-]", "", descriptions)
    for text in _submitted(value):
        stripped = text.strip()
        if len(stripped) >= _MIN_ECHO:
            assert stripped not in descriptions
        for run in re.findall(r"[0-9]{4,}", re.sub(r"[ \-]", "", text)):
            assert run not in squeezed


def _check_refusal(exc: InvalidArgumentError, value: object, field: str) -> None:
    assert exc.violations, "a refusal names the field"
    assert all(v.field.startswith((field, "kind")) for v in exc.violations)
    assert_no_echo(exc, value)


def _check(kind: DataKind, value: object, field: str) -> None:
    try:
        once = kinds.normalize(kind, value, field)  # type: ignore[arg-type]
    except InvalidArgumentError as exc:
        _check_refusal(exc, value, field)
        return
    assert kinds.normalize(kind, once, field) == once, "normalising twice changed it"
    # What a normal value encodes to decodes back to it (the stored form).
    assert kinds.value_from_canonical(kind, kinds.canonical_bytes(kind, once)) == once
    kinds.mask(kind, once)


@_MORE
@given(kind=st.sampled_from(TEXT_KINDS), value=_NEAR)
def test_text_kinds(kind: DataKind, value: str) -> None:
    _check(kind, value, "text")


@_MORE
@given(kind=st.sampled_from(sorted(ADDRESS_KINDS)), value=_ANY_ADDRESS)
def test_address_kinds(kind: DataKind, value: Address) -> None:
    _check(kind, value, "address")


@given(kind=st.sampled_from(list(DataKind)), value=st.one_of(TEXT, _ANY_ADDRESS))
def test_the_wrong_shape_of_value(kind: DataKind, value: str | Address) -> None:
    _check(kind, value, "text" if isinstance(value, str) else "address")
