from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class DataKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DATA_KIND_UNSPECIFIED: _ClassVar[DataKind]
    DATA_KIND_PAN: _ClassVar[DataKind]
    DATA_KIND_CARD_EXPIRY: _ClassVar[DataKind]
    DATA_KIND_CARDHOLDER_NAME: _ClassVar[DataKind]
    DATA_KIND_CVC: _ClassVar[DataKind]
    DATA_KIND_BANK_ACCOUNT: _ClassVar[DataKind]
    DATA_KIND_BILLING_ADDRESS: _ClassVar[DataKind]
    DATA_KIND_SHIPPING_ADDRESS: _ClassVar[DataKind]
    DATA_KIND_EMAIL: _ClassVar[DataKind]
    DATA_KIND_PHONE: _ClassVar[DataKind]
    DATA_KIND_TEXT: _ClassVar[DataKind]

class TokenFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TOKEN_FORMAT_UNSPECIFIED: _ClassVar[TokenFormat]
    TOKEN_FORMAT_RANDOM: _ClassVar[TokenFormat]
    TOKEN_FORMAT_PAN_LAST4: _ClassVar[TokenFormat]
    TOKEN_FORMAT_PAN_BIN_LAST4: _ClassVar[TokenFormat]
DATA_KIND_UNSPECIFIED: DataKind
DATA_KIND_PAN: DataKind
DATA_KIND_CARD_EXPIRY: DataKind
DATA_KIND_CARDHOLDER_NAME: DataKind
DATA_KIND_CVC: DataKind
DATA_KIND_BANK_ACCOUNT: DataKind
DATA_KIND_BILLING_ADDRESS: DataKind
DATA_KIND_SHIPPING_ADDRESS: DataKind
DATA_KIND_EMAIL: DataKind
DATA_KIND_PHONE: DataKind
DATA_KIND_TEXT: DataKind
TOKEN_FORMAT_UNSPECIFIED: TokenFormat
TOKEN_FORMAT_RANDOM: TokenFormat
TOKEN_FORMAT_PAN_LAST4: TokenFormat
TOKEN_FORMAT_PAN_BIN_LAST4: TokenFormat

class Address(_message.Message):
    __slots__ = ("recipient", "lines", "locality", "administrative_area", "postal_code", "region_code")
    RECIPIENT_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    LOCALITY_FIELD_NUMBER: _ClassVar[int]
    ADMINISTRATIVE_AREA_FIELD_NUMBER: _ClassVar[int]
    POSTAL_CODE_FIELD_NUMBER: _ClassVar[int]
    REGION_CODE_FIELD_NUMBER: _ClassVar[int]
    recipient: str
    lines: _containers.RepeatedScalarFieldContainer[str]
    locality: str
    administrative_area: str
    postal_code: str
    region_code: str
    def __init__(self, recipient: _Optional[str] = ..., lines: _Optional[_Iterable[str]] = ..., locality: _Optional[str] = ..., administrative_area: _Optional[str] = ..., postal_code: _Optional[str] = ..., region_code: _Optional[str] = ...) -> None: ...
