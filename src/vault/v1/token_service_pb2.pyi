import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.rpc import status_pb2 as _status_pb2
from vault.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TokenizeRequest(_message.Message):
    __slots__ = ("kind", "text", "address", "format", "deterministic", "subject", "metadata", "ttl", "request_id")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    KIND_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    DETERMINISTIC_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    kind: _types_pb2.DataKind
    text: str
    address: _types_pb2.Address
    format: _types_pb2.TokenFormat
    deterministic: bool
    subject: str
    metadata: _containers.ScalarMap[str, str]
    ttl: _duration_pb2.Duration
    request_id: str
    def __init__(self, kind: _Optional[_Union[_types_pb2.DataKind, str]] = ..., text: _Optional[str] = ..., address: _Optional[_Union[_types_pb2.Address, _Mapping]] = ..., format: _Optional[_Union[_types_pb2.TokenFormat, str]] = ..., deterministic: _Optional[bool] = ..., subject: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class TokenizeResponse(_message.Message):
    __slots__ = ("token", "fingerprint", "masked", "created", "expire_time")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    MASKED_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    token: str
    fingerprint: str
    masked: str
    created: bool
    expire_time: _timestamp_pb2.Timestamp
    def __init__(self, token: _Optional[str] = ..., fingerprint: _Optional[str] = ..., masked: _Optional[str] = ..., created: _Optional[bool] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class DetokenizeRequest(_message.Message):
    __slots__ = ("token", "purpose")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    token: str
    purpose: str
    def __init__(self, token: _Optional[str] = ..., purpose: _Optional[str] = ...) -> None: ...

class DetokenizeResponse(_message.Message):
    __slots__ = ("kind", "text", "address", "metadata", "subject", "token")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    KIND_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    kind: _types_pb2.DataKind
    text: str
    address: _types_pb2.Address
    metadata: _containers.ScalarMap[str, str]
    subject: str
    token: str
    def __init__(self, kind: _Optional[_Union[_types_pb2.DataKind, str]] = ..., text: _Optional[str] = ..., address: _Optional[_Union[_types_pb2.Address, _Mapping]] = ..., metadata: _Optional[_Mapping[str, str]] = ..., subject: _Optional[str] = ..., token: _Optional[str] = ...) -> None: ...

class BatchTokenizeRequest(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[TokenizeRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[TokenizeRequest, _Mapping]]] = ...) -> None: ...

class BatchTokenizeResponse(_message.Message):
    __slots__ = ("responses",)
    RESPONSES_FIELD_NUMBER: _ClassVar[int]
    responses: _containers.RepeatedCompositeFieldContainer[TokenizeResponse]
    def __init__(self, responses: _Optional[_Iterable[_Union[TokenizeResponse, _Mapping]]] = ...) -> None: ...

class BatchDetokenizeRequest(_message.Message):
    __slots__ = ("tokens", "purpose")
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    tokens: _containers.RepeatedScalarFieldContainer[str]
    purpose: str
    def __init__(self, tokens: _Optional[_Iterable[str]] = ..., purpose: _Optional[str] = ...) -> None: ...

class BatchDetokenizeResponse(_message.Message):
    __slots__ = ("responses",)
    RESPONSES_FIELD_NUMBER: _ClassVar[int]
    responses: _containers.RepeatedCompositeFieldContainer[DetokenizeResponse]
    def __init__(self, responses: _Optional[_Iterable[_Union[DetokenizeResponse, _Mapping]]] = ...) -> None: ...

class GetTokenRequest(_message.Message):
    __slots__ = ("token",)
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    token: str
    def __init__(self, token: _Optional[str] = ...) -> None: ...

class GetTokenResponse(_message.Message):
    __slots__ = ("token", "kind", "format", "masked", "fingerprint", "subject", "metadata", "deterministic", "create_time", "expire_time", "key_version")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    MASKED_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    DETERMINISTIC_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    KEY_VERSION_FIELD_NUMBER: _ClassVar[int]
    token: str
    kind: _types_pb2.DataKind
    format: _types_pb2.TokenFormat
    masked: str
    fingerprint: str
    subject: str
    metadata: _containers.ScalarMap[str, str]
    deterministic: bool
    create_time: _timestamp_pb2.Timestamp
    expire_time: _timestamp_pb2.Timestamp
    key_version: int
    def __init__(self, token: _Optional[str] = ..., kind: _Optional[_Union[_types_pb2.DataKind, str]] = ..., format: _Optional[_Union[_types_pb2.TokenFormat, str]] = ..., masked: _Optional[str] = ..., fingerprint: _Optional[str] = ..., subject: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., deterministic: _Optional[bool] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., key_version: _Optional[int] = ...) -> None: ...

class DeleteTokenRequest(_message.Message):
    __slots__ = ("token",)
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    token: str
    def __init__(self, token: _Optional[str] = ...) -> None: ...

class DeleteTokenResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class UpdateTokenRequest(_message.Message):
    __slots__ = ("token", "text", "address", "metadata", "replace_metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    REPLACE_METADATA_FIELD_NUMBER: _ClassVar[int]
    token: str
    text: str
    address: _types_pb2.Address
    metadata: _containers.ScalarMap[str, str]
    replace_metadata: bool
    def __init__(self, token: _Optional[str] = ..., text: _Optional[str] = ..., address: _Optional[_Union[_types_pb2.Address, _Mapping]] = ..., metadata: _Optional[_Mapping[str, str]] = ..., replace_metadata: _Optional[bool] = ...) -> None: ...

class UpdateTokenResponse(_message.Message):
    __slots__ = ("token", "fingerprint", "masked")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    MASKED_FIELD_NUMBER: _ClassVar[int]
    token: str
    fingerprint: str
    masked: str
    def __init__(self, token: _Optional[str] = ..., fingerprint: _Optional[str] = ..., masked: _Optional[str] = ...) -> None: ...

class TokenizeStreamResponse(_message.Message):
    __slots__ = ("response", "error")
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    response: TokenizeResponse
    error: _status_pb2.Status
    def __init__(self, response: _Optional[_Union[TokenizeResponse, _Mapping]] = ..., error: _Optional[_Union[_status_pb2.Status, _Mapping]] = ...) -> None: ...

class DetokenizeStreamRequest(_message.Message):
    __slots__ = ("token", "purpose")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    token: str
    purpose: str
    def __init__(self, token: _Optional[str] = ..., purpose: _Optional[str] = ...) -> None: ...

class DetokenizeStreamResponse(_message.Message):
    __slots__ = ("response", "error")
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    response: DetokenizeResponse
    error: _status_pb2.Status
    def __init__(self, response: _Optional[_Union[DetokenizeResponse, _Mapping]] = ..., error: _Optional[_Union[_status_pb2.Status, _Mapping]] = ...) -> None: ...
