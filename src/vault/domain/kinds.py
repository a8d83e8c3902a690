"""The rules of each data kind: validation and normalisation, the canonical byte encoding
that is fingerprinted and encrypted, the masked display form, and the shape of tokens.

This is the hot path of every tokenize call, so the common case avoids regexes and
allocations where a C-implemented ``str`` method answers (``isprintable``, ``isdigit``).

Every violation description is a fixed sentence: no submitted value, no part of one.
"""

from __future__ import annotations

import base64
import re
import struct
import unicodedata
from typing import TYPE_CHECKING

from vault.crypto.random import randbelow as csprng_randbelow
from vault.crypto.random import random_bytes as csprng_bytes
from vault.domain.model import ADDRESS_KINDS, Address, DataKind, TokenFormat, Value
from vault.errors import FieldViolation, InternalError, InvalidArgumentError

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
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

# --- bounds (DESIGN.md, "What it holds") -------------------------------------------------

_PAN_MIN_DIGITS = 12
_PAN_MAX_DIGITS = 19
_LAST_FOUR = 4
# PAN_BIN_LAST4 keeps the first six digits: the 6-digit BIN every scheme still routes on.
# Keeping eight (the newer 8-digit BINs) would leave a 12-digit PAN only 0 free digits.
_BIN_DIGITS = 6
# Fewer free digits than this makes a token space too small to be worth the name.
_MIN_FREE_DIGITS = 2
_CVC_LENGTHS = (3, 4)
_EXPIRY_MONTHS = ("01", "12")
_EXPIRY_YEARS = ("2000", "2099")
_SHORT_YEAR_DIGITS = 2  # a two-digit year is this century's
_NAME_MAX = 200
_IBAN_MIN = 15
_IBAN_MAX = 34
_ACCOUNT_MIN = 4
_ACCOUNT_MAX = 34
_EMAIL_LOCAL_MAX = 64
_EMAIL_DOMAIN_MAX = 253
_EMAIL_LABEL_MAX = 63
_EMAIL_MAX = 254
_EMAIL_MIN_LABELS = 2  # a name and a top-level domain at least
_PHONE_MIN_DIGITS = 8
_PHONE_MAX_DIGITS = 15
_PHONE_KEPT_HEAD = 2
_PHONE_KEPT_TAIL = 3
_TEXT_MAX = 4096
_ADDRESS_FIELD_MAX = 200
_ADDRESS_MAX_LINES = 5
_LOCALITY_MAX = 100
_AREA_MAX = 100
_POSTAL_CODE_MAX = 20
_POSTAL_PREFIX = 3
_REGION_CODE_LENGTH = 2
_RANDOM_TOKEN_BYTES = 20  # 160 bits from the CSPRNG: 32 base32 characters, no padding
_RANDOM_TOKEN_PREFIX = "tok_"

# ISO 3166-1 alpha-2 codes officially assigned (249), checked against Debian's iso-codes.
# Reserved codes (UK, EU, XK and the like) are not countries and are refused.
# fmt: off
_REGION_CODES = frozenset({
    "AD", "AE", "AF", "AG", "AI", "AL", "AM", "AO", "AQ", "AR", "AS", "AT", "AU", "AW", "AX", "AZ",
    "BA", "BB", "BD", "BE", "BF", "BG", "BH", "BI", "BJ", "BL", "BM", "BN", "BO", "BQ", "BR", "BS",
    "BT", "BV", "BW", "BY", "BZ",
    "CA", "CC", "CD", "CF", "CG", "CH", "CI", "CK", "CL", "CM", "CN", "CO", "CR", "CU", "CV", "CW",
    "CX", "CY", "CZ",
    "DE", "DJ", "DK", "DM", "DO", "DZ",
    "EC", "EE", "EG", "EH", "ER", "ES", "ET",
    "FI", "FJ", "FK", "FM", "FO", "FR",
    "GA", "GB", "GD", "GE", "GF", "GG", "GH", "GI", "GL", "GM", "GN", "GP", "GQ", "GR", "GS", "GT",
    "GU", "GW", "GY",
    "HK", "HM", "HN", "HR", "HT", "HU",
    "ID", "IE", "IL", "IM", "IN", "IO", "IQ", "IR", "IS", "IT",
    "JE", "JM", "JO", "JP",
    "KE", "KG", "KH", "KI", "KM", "KN", "KP", "KR", "KW", "KY", "KZ",
    "LA", "LB", "LC", "LI", "LK", "LR", "LS", "LT", "LU", "LV", "LY",
    "MA", "MC", "MD", "ME", "MF", "MG", "MH", "MK", "ML", "MM", "MN", "MO", "MP", "MQ", "MR", "MS",
    "MT", "MU", "MV", "MW", "MX", "MY", "MZ",
    "NA", "NC", "NE", "NF", "NG", "NI", "NL", "NO", "NP", "NR", "NU", "NZ",
    "OM",
    "PA", "PE", "PF", "PG", "PH", "PK", "PL", "PM", "PN", "PR", "PS", "PT", "PW", "PY",
    "QA",
    "RE", "RO", "RS", "RU", "RW",
    "SA", "SB", "SC", "SD", "SE", "SG", "SH", "SI", "SJ", "SK", "SL", "SM", "SN", "SO", "SR", "SS",
    "ST", "SV", "SX", "SY", "SZ",
    "TC", "TD", "TF", "TG", "TH", "TJ", "TK", "TL", "TM", "TN", "TO", "TR", "TT", "TV", "TW", "TZ",
    "UA", "UG", "UM", "US", "UY", "UZ",
    "VA", "VC", "VE", "VG", "VI", "VN", "VU",
    "WF", "WS",
    "YE", "YT",
    "ZA", "ZM", "ZW",
})
# fmt: on

# --- precompiled tables ------------------------------------------------------------------

# Luhn: every second digit from the right is doubled and its digits summed; this maps
# the ASCII digit to the ASCII digit of that sum so bytes.translate does it in C.
_LUHN_DOUBLED = bytes.maketrans(b"0123456789", b"0246813579")
_ASCII_ZERO = ord("0")
# Only these five separators are dropped from a phone number before the E.164 check.
_PHONE_SEPARATORS = str.maketrans("", "", " -.()")
# mod-97 (ISO 13616): letters count as two-digit numbers, A = 10 ... Z = 35.
_IBAN_LETTER_VALUES = str.maketrans({chr(c): str(c - ord("A") + 10) for c in range(65, 91)})
_IBAN_MODULUS = 97

# [0-9] and [A-Z], never \d or \w: those accept digits and letters of every script.
_EXPIRY = re.compile(r"([0-9]{2})(?: *[/-] *([0-9]{4}|[0-9]{2})|([0-9]{2}))")
_IBAN_PREFIX = re.compile(r"[A-Z]{2}[0-9]{2}")
_EMAIL_LOCAL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+")
_POSTAL_CODE = re.compile(r"[A-Za-z0-9 -]*")
_WHITESPACE_RUN = re.compile(r"\s+")
# Digits as card numbers are written: groups of ASCII digits joined by one space or dash.
_DIGIT_GROUPS = re.compile(r"[0-9]+(?:[ -][0-9]+)*")
_DIGIT_SEPARATOR = re.compile(r"[ -]")
_TOKEN = re.compile(r"tok_[a-z2-7]{32}|[0-9]{12,19}")
_FIELD_LENGTH = struct.Struct(">I")

# TEXT alone may hold line breaks and tabs; every other character of category C
# (control, format, surrogate, private use, unassigned) is refused everywhere.
_TEXT_EXTRA_CHARS = frozenset("\n\t")
_NO_EXTRA_CHARS: frozenset[str] = frozenset()

_PAN_FORMATS = frozenset({TokenFormat.PAN_LAST4, TokenFormat.PAN_BIN_LAST4})

_MALFORMED = "stored value is malformed"


def _invalid(field: str, description: str) -> InvalidArgumentError:
    return InvalidArgumentError(FieldViolation(field, description))


def _has_forbidden_char(text: str, allowed: frozenset[str]) -> bool:
    # isprintable() is False for every category-C character (and also for non-ASCII
    # spaces), so a True answer settles the common case without a Python-level loop.
    if text.isprintable():
        return False
    return any(ch not in allowed and unicodedata.category(ch)[0] == "C" for ch in text)


def _clean(text: str) -> str:
    # NFC so that "é" typed two ways is one value (one fingerprint, one token).
    if not text.isascii():
        text = unicodedata.normalize("NFC", text)
    return text.strip()


# --- text kinds --------------------------------------------------------------------------


def luhn_valid(digits: str) -> bool:
    """True when ``digits`` is a non-empty run of ASCII digits passing the Luhn check."""
    if not (digits and digits.isascii() and digits.isdigit()):
        return False
    raw = digits.encode("ascii")
    total = sum(raw[-1::-2]) + sum(raw[-2::-2].translate(_LUHN_DOUBLED))
    return (total - _ASCII_ZERO * len(raw)) % 10 == 0


def _pan(text: str, field: str) -> str:
    digits = text.replace(" ", "").replace("-", "")
    # "" has no wrong characters, only too few: it gets the length violation alone.
    only_digits = not digits or (digits.isascii() and digits.isdigit())
    length_ok = _PAN_MIN_DIGITS <= len(digits) <= _PAN_MAX_DIGITS
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


def _card_expiry(text: str, field: str) -> str:
    match = _EXPIRY.fullmatch(text)
    if match is None:
        raise _invalid(field, "must be MM/YY, MM/YYYY, MM-YY, MM-YYYY or MMYY")
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


def _cardholder_name(text: str, field: str) -> str:
    name = _WHITESPACE_RUN.sub(" ", text)
    if not 1 <= len(name) <= _NAME_MAX:
        raise _invalid(field, "must be 1 to 200 characters")
    return name


def _cvc(text: str, field: str) -> str:
    if len(text) in _CVC_LENGTHS and text.isascii() and text.isdigit():
        return text
    raise _invalid(field, "must be 3 or 4 digits")


def _iban(iban: str, field: str) -> str:
    if not (iban.isascii() and iban.isalnum()):
        raise _invalid(field, "an IBAN must contain only letters and digits")
    if not _IBAN_MIN <= len(iban) <= _IBAN_MAX:
        raise _invalid(field, "an IBAN must be 15 to 34 characters")
    # ISO 13616: move the country code and check digits to the end, read as a number.
    if int((iban[4:] + iban[:4]).translate(_IBAN_LETTER_VALUES)) % _IBAN_MODULUS != 1:
        raise _invalid(field, "fails the IBAN check digits")
    return iban


def _bank_account(text: str, field: str) -> str:
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
    raise _invalid(field, "an account number must be 4 to 34 letters and digits")


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


def _email(text: str, field: str) -> str:
    if text.count("@") != 1:
        raise _invalid(field, "must contain exactly one at sign")
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


def _phone(text: str, field: str) -> str:
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


def _text(text: str, field: str) -> str:
    if not 1 <= len(text) <= _TEXT_MAX:
        raise _invalid(field, "must be 1 to 4096 characters")
    return text


# Each rule takes the cleaned text (no control characters, NFC, stripped) and its field.
_TEXT_RULES: dict[DataKind, Callable[[str, str], str]] = {
    DataKind.PAN: _pan,
    DataKind.CARD_EXPIRY: _card_expiry,
    DataKind.CARDHOLDER_NAME: _cardholder_name,
    DataKind.CVC: _cvc,
    DataKind.BANK_ACCOUNT: _bank_account,
    DataKind.EMAIL: _email,
    DataKind.PHONE: _phone,
    DataKind.TEXT: _text,
}

# --- addresses ---------------------------------------------------------------------------


def _address_text(
    value: object, field: str, bounds: tuple[int, int] | None, violations: list[FieldViolation]
) -> str | None:
    """One cleaned address field, or None after recording why it is refused."""
    if not isinstance(value, str):
        violations.append(FieldViolation(field, "must be text"))
        return None
    if _has_forbidden_char(value, _NO_EXTRA_CHARS):
        violations.append(FieldViolation(field, "must not contain control characters"))
        return None
    text = _clean(value)
    if bounds is not None and not bounds[0] <= len(text) <= bounds[1]:
        low, high = bounds
        description = (
            f"must be at most {high} characters"
            if low == 0
            else f"must be {low} to {high} characters"
        )
        violations.append(FieldViolation(field, description))
        return None
    return text


def _address_lines(
    lines: object, field: str, violations: list[FieldViolation]
) -> tuple[str | None, ...]:
    if not isinstance(lines, tuple | list):
        violations.append(FieldViolation(field, "must be a list of lines"))
        return ()
    if len(lines) > _ADDRESS_MAX_LINES:
        violations.append(FieldViolation(field, "must have at most 5 lines"))
    # Every line is checked even when there are too many: the caller hears of all faults.
    return tuple(
        _address_text(line, f"{field}[{index}]", (1, _ADDRESS_FIELD_MAX), violations)
        for index, line in enumerate(lines)
    )


def _postal_code(value: object, field: str, violations: list[FieldViolation]) -> str | None:
    text = _address_text(value, field, None, violations)
    if text is None:
        return None
    if len(text) > _POSTAL_CODE_MAX or _POSTAL_CODE.fullmatch(text) is None:
        violations.append(
            FieldViolation(field, "must be at most 20 letters, digits, spaces or hyphens")
        )
        return None
    return text.upper()


def _region_code(value: object, field: str, violations: list[FieldViolation]) -> str | None:
    text = _address_text(value, field, None, violations)
    if text is None:
        return None
    # isascii first: "ß".upper() is "SS", a real country code.
    code = text.upper() if text.isascii() else text
    if not (len(code) == _REGION_CODE_LENGTH and code.isascii() and code.isalpha()):
        violations.append(FieldViolation(field, "must be two letters (ISO 3166-1 alpha-2)"))
        return None
    if code not in _REGION_CODES:
        violations.append(FieldViolation(field, "is not an assigned ISO 3166-1 country"))
        return None
    return code


def _address(address: Address, field: str) -> Address:
    violations: list[FieldViolation] = []
    # The recipient is optional (google.type.PostalAddress; a checkout may keep the name
    # as its own CARDHOLDER_NAME token): blank after cleaning is absent.
    recipient = _address_text(
        address.recipient, f"{field}.recipient", (0, _ADDRESS_FIELD_MAX), violations
    )
    lines = _address_lines(address.lines, f"{field}.lines", violations)
    locality = _address_text(address.locality, f"{field}.locality", (0, _LOCALITY_MAX), violations)
    area = _address_text(
        address.administrative_area, f"{field}.administrative_area", (0, _AREA_MAX), violations
    )
    postal_code = _postal_code(address.postal_code, f"{field}.postal_code", violations)
    region_code = _region_code(address.region_code, f"{field}.region_code", violations)
    # Beside its country, an address must say where: a line, a locality or a postal code
    # (a region code alone is a country, not an address). Named on lines, the usual field.
    if not lines and locality == "" and postal_code == "":
        description = "must be given when locality and postal code are empty"
        violations.append(FieldViolation(f"{field}.lines", description))
    if violations:
        raise InvalidArgumentError(violations)
    # No violation means no field came back None; the checks below only tell mypy so.
    if (
        recipient is None
        or locality is None
        or area is None
        or postal_code is None
        or region_code is None
    ):
        raise InternalError("address field refused without a violation")
    return Address(
        recipient=recipient,
        lines=tuple(line for line in lines if line is not None),
        locality=locality,
        administrative_area=area,
        postal_code=postal_code,
        region_code=region_code,
    )


# --- the public API ----------------------------------------------------------------------


def normalize(kind: DataKind, value: Value, field: str) -> Value:
    """Validate ``value`` for ``kind`` and return its normal form.

    ``field`` is the request path named in violations (``text`` or ``address``). Raises
    InvalidArgumentError listing every violation found; no description quotes the value.
    """
    if kind in ADDRESS_KINDS:
        if not isinstance(value, Address):
            raise _invalid(field, "must be an address for address kinds")
        return _address(value, field)
    rule = _TEXT_RULES.get(kind)
    if rule is None:
        if kind == DataKind.UNSPECIFIED:
            raise _invalid("kind", "must be set")
        raise _invalid("kind", "is not a known data kind")
    if not isinstance(value, str):
        raise _invalid(field, "must be text for this kind")
    allowed = _TEXT_EXTRA_CHARS if kind == DataKind.TEXT else _NO_EXTRA_CHARS
    if _has_forbidden_char(value, allowed):
        raise _invalid(field, "must not contain control characters")
    return rule(_clean(value), field)


def _encode_field(text: str) -> bytes:
    data = text.encode("utf-8")
    return _FIELD_LENGTH.pack(len(data)) + data


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
        return b"".join(
            (
                _encode_field(value.recipient),
                _FIELD_LENGTH.pack(len(value.lines)),
                *map(_encode_field, value.lines),
                _encode_field(value.locality),
                _encode_field(value.administrative_area),
                _encode_field(value.postal_code),
                _encode_field(value.region_code),
            )
        )
    except UnicodeEncodeError:
        # The codec's message quotes the offending character: never let it out.
        raise InternalError("value is not encodable") from None


class _Reader:
    """Reads the length-prefixed fields of an encoded address, front to back."""

    __slots__ = ("_data", "_offset")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._offset = 0

    def count(self) -> int:
        end = self._offset + _FIELD_LENGTH.size
        if end > len(self._data):
            raise InternalError(_MALFORMED)
        (number,) = _FIELD_LENGTH.unpack_from(self._data, self._offset)
        self._offset = end
        return int(number)

    def text(self) -> str:
        length = self.count()
        end = self._offset + length
        if end > len(self._data):
            raise InternalError(_MALFORMED)
        chunk = self._data[self._offset : end]
        self._offset = end
        return chunk.decode("utf-8")

    def at_end(self) -> bool:
        return self._offset == len(self._data)


def _decode_address(data: bytes) -> Address:
    reader = _Reader(data)
    recipient = reader.text()
    # Each line costs at least its 4-byte length, so a huge count fails fast, not slowly.
    lines = tuple(reader.text() for _ in range(reader.count()))
    address = Address(
        recipient=recipient,
        lines=lines,
        locality=reader.text(),
        administrative_area=reader.text(),
        postal_code=reader.text(),
        region_code=reader.text(),
    )
    if not reader.at_end():
        raise InternalError(_MALFORMED)
    return address


def value_from_canonical(kind: DataKind, data: bytes) -> Value:
    """Inverse of canonical_bytes; InternalError("stored value is malformed") if it is not one."""
    try:
        if kind in ADDRESS_KINDS:
            return _decode_address(data)
        if kind not in _TEXT_RULES:
            raise InternalError("data kind is not set")
        return data.decode("utf-8")
    except UnicodeDecodeError:
        # The codec's message quotes the offending bytes: never let them out.
        raise InternalError(_MALFORMED) from None


def _mask_pan(pan: str) -> str:
    return "*" * (len(pan) - _LAST_FOUR) + pan[-_LAST_FOUR:]


def _mask_bank_account(account: str) -> str:
    if len(account) <= _LAST_FOUR:
        return "*" * len(account)
    return "*" * (len(account) - _LAST_FOUR) + account[-_LAST_FOUR:]


def _mask_email(email: str) -> str:
    local, _, domain = email.partition("@")
    return f"{local[:1]}***@{domain}"


def _mask_phone(phone: str) -> str:
    digits = phone[1:]
    hidden = len(digits) - _PHONE_KEPT_HEAD - _PHONE_KEPT_TAIL
    return "+" + digits[:_PHONE_KEPT_HEAD] + "*" * hidden + digits[-_PHONE_KEPT_TAIL:]


def _mask_name(name: str) -> str:
    return name[:1] + "***"


def _mask_expiry(_: str) -> str:
    return "**/**"


def _mask_all(_: str) -> str:
    return "***"


_TEXT_MASKS: dict[DataKind, Callable[[str], str]] = {
    DataKind.PAN: _mask_pan,
    DataKind.CARD_EXPIRY: _mask_expiry,
    DataKind.CARDHOLDER_NAME: _mask_name,
    DataKind.CVC: _mask_all,
    DataKind.BANK_ACCOUNT: _mask_bank_account,
    DataKind.EMAIL: _mask_email,
    DataKind.PHONE: _mask_phone,
    DataKind.TEXT: _mask_all,
}


def mask(kind: DataKind, value: Value) -> str:
    """The display-safe form of a NORMALISED value (DESIGN.md, "What it holds")."""
    if isinstance(value, Address):
        if kind not in ADDRESS_KINDS:
            raise InternalError("value does not match its kind")
        if not value.postal_code:
            return value.region_code
        return f"{value.region_code} {value.postal_code[:_POSTAL_PREFIX]}***"
    masker = _TEXT_MASKS.get(kind)
    if masker is None:
        raise InternalError("value does not match its kind")
    return masker(value)


def resolve_format(kind: DataKind, fmt: TokenFormat) -> TokenFormat:
    """The token format to use: the kind's default for UNSPECIFIED, else ``fmt`` if allowed."""
    try:
        resolved = TokenFormat(fmt)
    except ValueError:
        raise _invalid("format", "is not a known token format") from None
    if resolved == TokenFormat.UNSPECIFIED:
        return TokenFormat.PAN_LAST4 if kind == DataKind.PAN else TokenFormat.RANDOM
    if resolved in _PAN_FORMATS and kind != DataKind.PAN:
        raise _invalid("format", "PAN formats apply only to DATA_KIND_PAN")
    return resolved


def check_pan_format(pan: str, fmt: TokenFormat) -> None:
    """Refuse a PAN format that leaves too few digits to draw (a 12-digit PAN with BIN
    and last four kept has two)."""
    kept_head = _BIN_DIGITS if fmt == TokenFormat.PAN_BIN_LAST4 else 0
    if len(pan) - kept_head - _LAST_FOUR < _MIN_FREE_DIGITS:
        raise _invalid("format", "too few digits to tokenize in this format")


def new_pan_token(
    pan: str, fmt: TokenFormat, randbelow: Callable[[int], int] = csprng_randbelow
) -> str:
    """A PAN-shaped token for a NORMALISED (Luhn-valid) ``pan``.

    Same length, digits only, last four kept, and with PAN_BIN_LAST4 the first six too.
    The token always fails Luhn, so it is never a card number and never equals ``pan``.
    Whether it is already in use is for the caller to check (and call again).
    """
    if fmt == TokenFormat.PAN_LAST4:
        kept_head = 0
    elif fmt == TokenFormat.PAN_BIN_LAST4:
        kept_head = _BIN_DIGITS
    else:
        raise InternalError("not a PAN token format")
    if not luhn_valid(pan):
        raise InternalError("PAN is not normalised")
    check_pan_format(pan, fmt)
    free = len(pan) - kept_head - _LAST_FOUR
    # One draw below 10**free is the same uniform choice as `free` draws below 10, at one
    # CSPRNG call instead of `free` of them.
    bound = 10**free
    drawn = randbelow(bound)
    if not 0 <= drawn < bound:
        raise InternalError("random source returned a number out of range")
    middle = str(drawn).zfill(free)
    token = pan[:kept_head] + middle + pan[-_LAST_FOUR:]
    if luhn_valid(token):
        # Changing one digit always changes the Luhn sum mod 10 (the doubling map is a
        # permutation of 0-9), so bumping the last free digit makes it fail in one pass,
        # with no rejection loop. It skews that digit slightly: fine, it is not a key.
        bumped = str((int(middle[-1]) + 1) % 10)
        token = pan[:kept_head] + middle[:-1] + bumped + pan[-_LAST_FOUR:]
    return token


def new_random_token(token_bytes: Callable[[int], bytes] = csprng_bytes) -> str:
    """``tok_`` and 32 lower-case base32 characters: 160 CSPRNG bits, nothing else."""
    raw = token_bytes(_RANDOM_TOKEN_BYTES)
    if len(raw) != _RANDOM_TOKEN_BYTES:
        raise InternalError("random source returned the wrong number of bytes")
    return _RANDOM_TOKEN_PREFIX + base64.b32encode(raw).decode("ascii").lower()


def is_pan_shaped(token: str) -> bool:
    """True for 12 to 19 ASCII digits: the shape of a PAN token (and of a PAN)."""
    return _PAN_MIN_DIGITS <= len(token) <= _PAN_MAX_DIGITS and token.isascii() and token.isdigit()


def validate_token_string(token: str, field: str) -> None:
    """Refuse anything a caller sends as a token that this vault could not have issued."""
    if _TOKEN.fullmatch(token) is None:
        raise _invalid(field, "is not a token of this vault")


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
                if len(digits) > _PAN_MAX_DIGITS:
                    break
                if len(digits) >= _PAN_MIN_DIGITS and luhn_valid(digits):
                    return True
    return False
