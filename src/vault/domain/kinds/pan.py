"""Card numbers: the PAN rule (digits, length, Luhn), its mask, the PAN shape, and the
search for anything card-number-like in free text."""

from __future__ import annotations

import re
import unicodedata

from vault.errors import FieldViolation, InvalidArgumentError

__all__ = [
    "LAST_FOUR",
    "PAN_MAX_DIGITS",
    "PAN_MIN_DIGITS",
    "contains_pan_like",
    "is_pan_shaped",
    "luhn_valid",
    "mask_last_four",
    "pan",
]

PAN_MIN_DIGITS = 12
PAN_MAX_DIGITS = 19
LAST_FOUR = 4

# Luhn: every second digit from the right is doubled and its digits summed; this maps
# the ASCII digit to the ASCII digit of that sum so bytes.translate does it in C.
_LUHN_DOUBLED = bytes.maketrans(b"0123456789", b"0246813579")
_ASCII_ZERO = ord("0")

# Digits as card numbers are written: groups of ASCII digits joined by one space or dash.
_DIGIT_GROUPS = re.compile(r"[0-9]+(?:[ -][0-9]+)*")
_DIGIT_SEPARATOR = re.compile(r"[ -]")


def luhn_valid(digits: str) -> bool:
    """True when ``digits`` is a non-empty run of ASCII digits passing the Luhn check."""
    if not (digits and digits.isascii() and digits.isdigit()):
        return False
    raw = digits.encode("ascii")
    total = sum(raw[-1::-2]) + sum(raw[-2::-2].translate(_LUHN_DOUBLED))
    return (total - _ASCII_ZERO * len(raw)) % 10 == 0


def pan(text: str, field: str) -> str:
    digits = text.replace(" ", "").replace("-", "")
    # "" has no wrong characters, only too few: it gets the length violation alone.
    only_digits = not digits or (digits.isascii() and digits.isdigit())
    length_ok = PAN_MIN_DIGITS <= len(digits) <= PAN_MAX_DIGITS
    if only_digits and length_ok and luhn_valid(digits):
        return digits
    violations = []
    if not only_digits:
        violations.append(FieldViolation(field, "must contain only digits 0-9, spaces and dashes"))
    if not length_ok:
        violations.append(FieldViolation(field, "must be 12 to 19 digits"))
    if not violations:
        violations.append(FieldViolation(field, "fails the Luhn check"))
    raise InvalidArgumentError(violations)


def mask_last_four(digits: str) -> str:
    """Every character but the last four hidden (all of them when there are no more)."""
    if len(digits) <= LAST_FOUR:
        return "*" * len(digits)
    return "*" * (len(digits) - LAST_FOUR) + digits[-LAST_FOUR:]


def is_pan_shaped(token: str) -> bool:
    """True for 12 to 19 ASCII digits: the shape of a PAN token (and of a PAN)."""
    return PAN_MIN_DIGITS <= len(token) <= PAN_MAX_DIGITS and token.isascii() and token.isdigit()


def contains_pan_like(text: str) -> bool:
    """True when ``text`` holds something a card number could be: a Luhn-valid run of 12
    to 19 digits, written whole or in groups joined by single spaces or dashes.

    Free text that ends up stored or audited in clear is refused with this, so a careless
    client cannot put a PAN in the audit trail. Compatibility forms are folded first
    (NFKC: fullwidth digits are digits). A run of whole groups is tested, so a PAN written
    after a year ("2024 4242 4242 4242 4242") is found; an unbroken run of more than 19
    digits is not a card number and is not searched inside.
    """
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text)
    for run in _DIGIT_GROUPS.finditer(text):
        groups = _DIGIT_SEPARATOR.split(run.group())
        for start in range(len(groups)):
            digits = ""
            for group in groups[start:]:
                digits += group
                if len(digits) > PAN_MAX_DIGITS:
                    break
                if len(digits) >= PAN_MIN_DIGITS and luhn_valid(digits):
                    return True
    return False
