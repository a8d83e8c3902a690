"""Contact data: e-mail addresses and E.164 phone numbers, with their masks."""

from __future__ import annotations

import re
import unicodedata

from vault.domain.kinds.common import invalid
from vault.errors import FieldViolation, InvalidArgumentError

__all__ = ["email", "mask_email", "mask_phone", "phone"]

_EMAIL_LOCAL_MAX = 64
_EMAIL_DOMAIN_MAX = 253
_EMAIL_LABEL_MAX = 63
_EMAIL_MAX = 254
_EMAIL_MIN_LABELS = 2  # a name and a top-level domain at least
_PHONE_MIN_DIGITS = 8
_PHONE_MAX_DIGITS = 15
_PHONE_KEPT_HEAD = 2
_PHONE_KEPT_TAIL = 3

# Only these five separators are dropped from a phone number before the E.164 check.
_PHONE_SEPARATORS = str.maketrans("", "", " -.()")
# [A-Za-z0-9], never \w: that accepts letters and digits of every script.
_EMAIL_LOCAL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+")


def _domain_label_ok(label: str) -> bool:
    # str.isalnum admits letters of every script: internationalised domains pass as
    # typed, and so does their punycode form.
    return (
        0 < len(label) <= _EMAIL_LABEL_MAX
        and label[0] != "-"
        and label[-1] != "-"
        and label.replace("-", "").isalnum()
    )


def _email_local_violation(local: str) -> str | None:
    if not 1 <= len(local) <= _EMAIL_LOCAL_MAX:
        return "local part must be 1 to 64 characters"
    if _EMAIL_LOCAL.fullmatch(local) is None:
        # Quoted local parts are valid RFC 5322 but refused: no payment flow needs them.
        return "local part may contain only letters, digits, dots and RFC 5322 symbols"
    if local[0] == "." or local[-1] == "." or ".." in local:
        return "local part must not start or end with a dot nor have two in a row"
    return None


def _email_domain_violation(domain: str) -> str | None:
    if not 1 <= len(domain) <= _EMAIL_DOMAIN_MAX:
        return "domain must be 1 to 253 characters"
    labels = domain.split(".")
    if len(labels) < _EMAIL_MIN_LABELS:
        return "domain must have at least two labels"
    if not all(_domain_label_ok(label) for label in labels):
        return "domain labels must be 1 to 63 letters, digits or inner hyphens"
    return None


def email(text: str, field: str) -> str:
    if text.count("@") != 1:
        raise invalid(field, "must contain exactly one at sign")
    local, _, domain = text.partition("@")
    if not domain.isascii():
        # Compatibility forms fold as IDNA (UTS #46) maps them: a fullwidth "example.com"
        # is "example.com", one fingerprint, not a second value of the same address.
        domain = unicodedata.normalize("NFKC", domain)
    domain = domain.lower()
    violations = [
        FieldViolation(field, description)
        for description in (_email_local_violation(local), _email_domain_violation(domain))
        if description is not None
    ]
    if len(local) + 1 + len(domain) > _EMAIL_MAX:
        violations.append(FieldViolation(field, "must be at most 254 characters"))
    if violations:
        raise InvalidArgumentError(violations)
    return f"{local}@{domain}"


def phone(text: str, field: str) -> str:
    # "+44 (0)20 ..." marks the trunk prefix dialled only at home; E.164 never has it, and
    # keeping its 0 would store another number, so it goes before the separators do.
    compact = text.replace("(0)", "").translate(_PHONE_SEPARATORS)
    plus = compact[:1] == "+"
    digits = compact[1:] if plus else compact
    only_digits = not digits or (digits.isascii() and digits.isdigit())
    length_ok = _PHONE_MIN_DIGITS <= len(digits) <= _PHONE_MAX_DIGITS
    if plus and only_digits and length_ok and digits[0] != "0":
        return compact
    violations = []
    if not plus:
        violations.append(FieldViolation(field, "must start with a plus sign (E.164)"))
    if not only_digits:
        violations.append(FieldViolation(field, "must contain only digits after the plus sign"))
    if not length_ok:
        violations.append(FieldViolation(field, "must have 8 to 15 digits after the plus sign"))
    if digits[:1] == "0":
        violations.append(FieldViolation(field, "country code must not start with zero"))
    raise InvalidArgumentError(violations)


def mask_email(address: str) -> str:
    local, _, domain = address.partition("@")
    return f"{local[:1]}***@{domain}"


def mask_phone(number: str) -> str:
    digits = number[1:]
    hidden = len(digits) - _PHONE_KEPT_HEAD - _PHONE_KEPT_TAIL
    return "+" + digits[:_PHONE_KEPT_HEAD] + "*" * hidden + digits[-_PHONE_KEPT_TAIL:]
