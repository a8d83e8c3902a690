"""Bank accounts: an IBAN (ISO 13616 check digits) or a plain account number."""

from __future__ import annotations

import re

from vault.domain.kinds.common import invalid

__all__ = ["bank_account"]

_IBAN_MIN = 15
_IBAN_MAX = 34
_ACCOUNT_MIN = 4
_ACCOUNT_MAX = 34

# mod-97 (ISO 13616): letters count as two-digit numbers, A = 10 ... Z = 35.
_IBAN_LETTER_VALUES = str.maketrans({chr(c): str(c - ord("A") + 10) for c in range(65, 91)})
_IBAN_MODULUS = 97
# [0-9] and [A-Z], never \d or \w: those accept digits and letters of every script.
_IBAN_PREFIX = re.compile(r"[A-Z]{2}[0-9]{2}")


def _iban(iban: str, field: str) -> str:
    if not (iban.isascii() and iban.isalnum()):
        raise invalid(field, "an IBAN must contain only letters and digits")
    if not _IBAN_MIN <= len(iban) <= _IBAN_MAX:
        raise invalid(field, "an IBAN must be 15 to 34 characters")
    # ISO 13616: move the country code and check digits to the end, read as a number.
    if int((iban[4:] + iban[:4]).translate(_IBAN_LETTER_VALUES)) % _IBAN_MODULUS != 1:
        raise invalid(field, "fails the IBAN check digits")
    return iban


def bank_account(text: str, field: str) -> str:
    compact = text.replace(" ", "")
    # Upper-case ASCII only: "ß".upper() is "SS", which would turn refused text into a
    # different, accepted account number.
    if compact.isascii():
        compact = compact.upper()
    if _IBAN_PREFIX.match(compact):
        return _iban(compact, field)
    account = compact.replace("-", "")
    if _ACCOUNT_MIN <= len(account) <= _ACCOUNT_MAX and account.isascii() and account.isalnum():
        return account
    raise invalid(field, "an account number must be 4 to 34 letters and digits")
