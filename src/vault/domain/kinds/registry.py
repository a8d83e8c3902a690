"""Which rule, mask and encoding each data kind has, and the three calls that dispatch on
the kind: normalize (validate), mask and the canonical bytes (both ways).

This is the hot path of every tokenize call, so the common case avoids regexes and
allocations where a C-implemented ``str`` method answers (``isprintable``, ``isdigit``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vault.domain.kinds import addresses, bank, card, contact, pan
from vault.domain.kinds.common import (
    MALFORMED,
    NO_EXTRA_CHARS,
    TEXT_EXTRA_CHARS,
    clean,
    has_forbidden_char,
    invalid,
)
from vault.domain.model import ADDRESS_KINDS, Address, DataKind, Value
from vault.errors import InternalError

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["canonical_bytes", "mask", "normalize", "value_from_canonical"]

_TEXT_MAX = 4096


def _text(text: str, field: str) -> str:
    if not 1 <= len(text) <= _TEXT_MAX:
        raise invalid(field, "must be 1 to 4096 characters")
    return text


def _mask_all(_: str) -> str:
    return "***"


# Each rule takes the cleaned text (no control characters, NFC, stripped) and its field.
_TEXT_RULES: dict[DataKind, Callable[[str, str], str]] = {
    DataKind.PAN: pan.pan,
    DataKind.CARD_EXPIRY: card.card_expiry,
    DataKind.CARDHOLDER_NAME: card.cardholder_name,
    DataKind.CVC: card.cvc,
    DataKind.BANK_ACCOUNT: bank.bank_account,
    DataKind.EMAIL: contact.email,
    DataKind.PHONE: contact.phone,
    DataKind.TEXT: _text,
}

_TEXT_MASKS: dict[DataKind, Callable[[str], str]] = {
    DataKind.PAN: pan.mask_last_four,
    DataKind.CARD_EXPIRY: card.mask_expiry,
    DataKind.CARDHOLDER_NAME: card.mask_name,
    DataKind.CVC: _mask_all,
    DataKind.BANK_ACCOUNT: pan.mask_last_four,
    DataKind.EMAIL: contact.mask_email,
    DataKind.PHONE: contact.mask_phone,
    DataKind.TEXT: _mask_all,
}


def normalize(kind: DataKind, value: Value, field: str) -> Value:
    """Validate ``value`` for ``kind`` and return its normal form.

    ``field`` is the request path named in violations (``text`` or ``address``). Raises
    InvalidArgumentError listing every violation found; no description quotes the value.
    """
    if kind in ADDRESS_KINDS:
        if not isinstance(value, Address):
            raise invalid(field, "must be an address for address kinds")
        return addresses.address(value, field)
    rule = _TEXT_RULES.get(kind)
    if rule is None:
        if kind == DataKind.UNSPECIFIED:
            raise invalid("kind", "must be set")
        raise invalid("kind", "is not a known data kind")
    if not isinstance(value, str):
        raise invalid(field, "must be text for this kind")
    allowed = TEXT_EXTRA_CHARS if kind == DataKind.TEXT else NO_EXTRA_CHARS
    if has_forbidden_char(value, allowed):
        raise invalid(field, "must not contain control characters")
    return rule(clean(value), field)


def canonical_bytes(kind: DataKind, value: Value) -> bytes:
    """The bytes that are fingerprinted and encrypted for a NORMALISED value.

    Text is its UTF-8. An address is each field in a fixed order as a 4-byte big-endian
    length and its UTF-8, with the line count before the lines, so the encoding is
    injective: ("a", "b") and ("ab",) as lines never meet.
    """
    try:
        if isinstance(value, str):
            if kind in ADDRESS_KINDS or kind not in _TEXT_RULES:
                raise InternalError("value does not match its kind")
            return value.encode("utf-8")
        if kind not in ADDRESS_KINDS:
            raise InternalError("value does not match its kind")
        return addresses.encode_address(value)
    except UnicodeEncodeError:
        # The codec's message quotes the offending character: never let it out.
        raise InternalError("value is not encodable") from None


def value_from_canonical(kind: DataKind, data: bytes) -> Value:
    """Inverse of canonical_bytes; InternalError("stored value is malformed") if it is not one."""
    try:
        if kind in ADDRESS_KINDS:
            return addresses.decode_address(data)
        if kind not in _TEXT_RULES:
            raise InternalError("data kind is not set")
        return data.decode("utf-8")
    except UnicodeDecodeError:
        # The codec's message quotes the offending bytes: never let them out.
        raise InternalError(MALFORMED) from None


def mask(kind: DataKind, value: Value) -> str:
    """The display-safe form of a NORMALISED value (DESIGN.md, "What it holds")."""
    if isinstance(value, Address):
        if kind not in ADDRESS_KINDS:
            raise InternalError("value does not match its kind")
        return addresses.mask_address(value)
    masker = _TEXT_MASKS.get(kind)
    if masker is None:
        raise InternalError("value does not match its kind")
    return masker(value)
