"""Postal addresses (billing and shipping): the field rules, the ISO 3166-1 country
codes, the mask, and the length-prefixed encoding that is fingerprinted and encrypted."""

from __future__ import annotations

import re
import struct

from vault.domain.kinds.common import MALFORMED, NO_EXTRA_CHARS, clean, has_forbidden_char
from vault.domain.model import Address
from vault.errors import FieldViolation, InternalError, InvalidArgumentError

__all__ = ["REGION_CODES", "address", "decode_address", "encode_address", "mask_address"]

_ADDRESS_FIELD_MAX = 200
_ADDRESS_MAX_LINES = 5
_LOCALITY_MAX = 100
_AREA_MAX = 100
_POSTAL_CODE_MAX = 20
_POSTAL_PREFIX = 3
_REGION_CODE_LENGTH = 2

# ISO 3166-1 alpha-2 codes officially assigned (249), checked against Debian's iso-codes.
# Reserved codes (UK, EU, XK and the like) are not countries and are refused.
# fmt: off
REGION_CODES = frozenset({
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

# [A-Za-z0-9], never \w: that accepts letters and digits of every script.
_POSTAL_CODE = re.compile(r"[A-Za-z0-9 -]*")
_FIELD_LENGTH = struct.Struct(">I")


def _address_text(
    value: object, field: str, bounds: tuple[int, int] | None, violations: list[FieldViolation]
) -> str | None:
    """One cleaned address field, or None after recording why it is refused."""
    if not isinstance(value, str):
        violations.append(FieldViolation(field, "must be text"))
        return None
    if has_forbidden_char(value, NO_EXTRA_CHARS):
        violations.append(FieldViolation(field, "must not contain control characters"))
        return None
    text = clean(value)
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
    if code not in REGION_CODES:
        violations.append(FieldViolation(field, "is not an assigned ISO 3166-1 country"))
        return None
    return code


def address(value: Address, field: str) -> Address:
    violations: list[FieldViolation] = []
    # The recipient is optional (google.type.PostalAddress; a checkout may keep the name
    # as its own CARDHOLDER_NAME token): blank after cleaning is absent.
    recipient = _address_text(
        value.recipient, f"{field}.recipient", (0, _ADDRESS_FIELD_MAX), violations
    )
    lines = _address_lines(value.lines, f"{field}.lines", violations)
    locality = _address_text(value.locality, f"{field}.locality", (0, _LOCALITY_MAX), violations)
    area = _address_text(
        value.administrative_area, f"{field}.administrative_area", (0, _AREA_MAX), violations
    )
    postal_code = _postal_code(value.postal_code, f"{field}.postal_code", violations)
    region_code = _region_code(value.region_code, f"{field}.region_code", violations)
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


def mask_address(value: Address) -> str:
    if not value.postal_code:
        return value.region_code
    return f"{value.region_code} {value.postal_code[:_POSTAL_PREFIX]}***"


def _encode_field(text: str) -> bytes:
    data = text.encode("utf-8")
    return _FIELD_LENGTH.pack(len(data)) + data


def encode_address(value: Address) -> bytes:
    """Each field in a fixed order as a 4-byte big-endian length and its UTF-8, with the
    line count before the lines, so the encoding is injective: ("a", "b") and ("ab",) as
    lines never meet. Raises UnicodeEncodeError for text UTF-8 cannot hold."""
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


class _Reader:
    """Reads the length-prefixed fields of an encoded address, front to back."""

    __slots__ = ("_data", "_offset")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._offset = 0

    def count(self) -> int:
        end = self._offset + _FIELD_LENGTH.size
        if end > len(self._data):
            raise InternalError(MALFORMED)
        (number,) = _FIELD_LENGTH.unpack_from(self._data, self._offset)
        self._offset = end
        return int(number)

    def text(self) -> str:
        length = self.count()
        end = self._offset + length
        if end > len(self._data):
            raise InternalError(MALFORMED)
        chunk = self._data[self._offset : end]
        self._offset = end
        return chunk.decode("utf-8")

    def at_end(self) -> bool:
        return self._offset == len(self._data)


def decode_address(data: bytes) -> Address:
    """Inverse of encode_address. Raises UnicodeDecodeError for bytes that are not UTF-8."""
    reader = _Reader(data)
    recipient = reader.text()
    # Each line costs at least its 4-byte length, so a huge count fails fast, not slowly.
    lines = tuple(reader.text() for _ in range(reader.count()))
    decoded = Address(
        recipient=recipient,
        lines=lines,
        locality=reader.text(),
        administrative_area=reader.text(),
        postal_code=reader.text(),
        region_code=reader.text(),
    )
    if not reader.at_end():
        raise InternalError(MALFORMED)
    return decoded
