import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from vault.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ExportSubjectRequest(_message.Message):
    __slots__ = ("subject", "purpose")
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    subject: str
    purpose: str
    def __init__(self, subject: _Optional[str] = ..., purpose: _Optional[str] = ...) -> None: ...

class SubjectRecord(_message.Message):
    __slots__ = ("token", "kind", "text", "address", "metadata", "create_time", "expire_time")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    token: str
    kind: _types_pb2.DataKind
    text: str
    address: _types_pb2.Address
    metadata: _containers.ScalarMap[str, str]
    create_time: _timestamp_pb2.Timestamp
    expire_time: _timestamp_pb2.Timestamp
    def __init__(self, token: _Optional[str] = ..., kind: _Optional[_Union[_types_pb2.DataKind, str]] = ..., text: _Optional[str] = ..., address: _Optional[_Union[_types_pb2.Address, _Mapping]] = ..., metadata: _Optional[_Mapping[str, str]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class SubjectReveal(_message.Message):
    __slots__ = ("time", "caller", "purpose", "token", "request_id")
    TIME_FIELD_NUMBER: _ClassVar[int]
    CALLER_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    time: _timestamp_pb2.Timestamp
    caller: str
    purpose: str
    token: str
    request_id: str
    def __init__(self, time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., caller: _Optional[str] = ..., purpose: _Optional[str] = ..., token: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class ExportSubjectResponse(_message.Message):
    __slots__ = ("records", "reveals", "held")
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    REVEALS_FIELD_NUMBER: _ClassVar[int]
    HELD_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[SubjectRecord]
    reveals: _containers.RepeatedCompositeFieldContainer[SubjectReveal]
    held: bool
    def __init__(self, records: _Optional[_Iterable[_Union[SubjectRecord, _Mapping]]] = ..., reveals: _Optional[_Iterable[_Union[SubjectReveal, _Mapping]]] = ..., held: _Optional[bool] = ...) -> None: ...

class EraseSubjectRequest(_message.Message):
    __slots__ = ("subject", "reason")
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    subject: str
    reason: str
    def __init__(self, subject: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class EraseSubjectResponse(_message.Message):
    __slots__ = ("erased_count",)
    ERASED_COUNT_FIELD_NUMBER: _ClassVar[int]
    erased_count: int
    def __init__(self, erased_count: _Optional[int] = ...) -> None: ...

class SetLegalHoldRequest(_message.Message):
    __slots__ = ("subject", "hold", "reason")
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    HOLD_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    subject: str
    hold: bool
    reason: str
    def __init__(self, subject: _Optional[str] = ..., hold: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...

class SetLegalHoldResponse(_message.Message):
    __slots__ = ("held", "changed")
    HELD_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    held: bool
    changed: bool
    def __init__(self, held: _Optional[bool] = ..., changed: _Optional[bool] = ...) -> None: ...
