"""The card's other data: expiry date, cardholder name and CVC, with their masks."""

from __future__ import annotations

import re

from vault.domain.kinds.common import invalid
from vault.errors import FieldViolation, InvalidArgumentError

__all__ = ["card_expiry", "cardholder_name", "cvc", "mask_expiry", "mask_name"]

_CVC_LENGTHS = (3, 4)
_EXPIRY_MONTHS = ("01", "12")
_EXPIRY_YEARS = ("2000", "2099")
_SHORT_YEAR_DIGITS = 2  # a two-digit year is this century's
_NAME_MAX = 200

# [0-9], never \d: that accepts digits of every script.
_EXPIRY = re.compile(r"([0-9]{2})(?: *[/-] *([0-9]{4}|[0-9]{2})|([0-9]{2}))")
_WHITESPACE_RUN = re.compile(r"\s+")


def card_expiry(text: str, field: str) -> str:
    match = _EXPIRY.fullmatch(text)
    if match is None:
        raise invalid(field, "must be MM/YY, MM/YYYY, MM-YY, MM-YYYY or MMYY")
    month: str = match.group(1)
    year: str = match.group(2) or match.group(3)
    if len(year) == _SHORT_YEAR_DIGITS:
        year = "20" + year
    # Fixed-width digit strings compare like the numbers they spell.
    violations = []
    if not _EXPIRY_MONTHS[0] <= month <= _EXPIRY_MONTHS[1]:
        violations.append(FieldViolation(field, "month must be 01 to 12"))
    if not _EXPIRY_YEARS[0] <= year <= _EXPIRY_YEARS[1]:
        violations.append(FieldViolation(field, "year must be 2000 to 2099"))
    if violations:
        raise InvalidArgumentError(violations)
    # Past dates are kept: what an expiry means is the caller's business, not the vault's.
    return f"{month}/{year}"


def cardholder_name(text: str, field: str) -> str:
    name = _WHITESPACE_RUN.sub(" ", text)
    if not 1 <= len(name) <= _NAME_MAX:
        raise invalid(field, "must be 1 to 200 characters")
    return name


def cvc(text: str, field: str) -> str:
    if len(text) in _CVC_LENGTHS and text.isascii() and text.isdigit():
        return text
    raise invalid(field, "must be 3 or 4 digits")


def mask_name(name: str) -> str:
    return name[:1] + "***"


def mask_expiry(_: str) -> str:
    return "**/**"
