"""Domain types shared by the use cases. Numbers match the proto enums on purpose so the
API layer maps them with a plain int conversion, but nothing here imports the proto."""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["ADDRESS_KINDS", "Address", "DataKind", "RequestContext", "TokenFormat", "Value"]


class DataKind(enum.IntEnum):
    UNSPECIFIED = 0
    PAN = 1
    CARD_EXPIRY = 2
    CARDHOLDER_NAME = 3
    CVC = 4
    BANK_ACCOUNT = 5
    BILLING_ADDRESS = 6
    SHIPPING_ADDRESS = 7
    EMAIL = 8
    PHONE = 9
    TEXT = 10


class TokenFormat(enum.IntEnum):
    UNSPECIFIED = 0
    RANDOM = 1
    PAN_LAST4 = 2
    PAN_BIN_LAST4 = 3


ADDRESS_KINDS = frozenset({DataKind.BILLING_ADDRESS, DataKind.SHIPPING_ADDRESS})


@dataclass(frozen=True, slots=True)
class Address:
    """A postal address (fields of google.type.PostalAddress that a checkout sends)."""

    recipient: str
    lines: tuple[str, ...]
    locality: str
    administrative_area: str
    postal_code: str
    region_code: str

    def __repr__(self) -> str:
        # An address is personal data: never printed, whatever prints the object.
        return "Address(<redacted>)"


# A value as the vault holds it: text for every kind but addresses.
Value = str | Address


@dataclass(frozen=True, slots=True)
class RequestContext:
    """Where a call came from, for the audit trail (filled in by the API layer)."""

    request_id: str = ""  # x-request-id of the call, or one the API layer made up
    peer: str = ""  # network peer (gRPC peer string)
