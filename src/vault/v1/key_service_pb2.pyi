import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class KeyState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    KEY_STATE_UNSPECIFIED: _ClassVar[KeyState]
    KEY_STATE_PRIMARY: _ClassVar[KeyState]
    KEY_STATE_ACTIVE: _ClassVar[KeyState]
    KEY_STATE_RETIRED: _ClassVar[KeyState]

class RewrapState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REWRAP_STATE_UNSPECIFIED: _ClassVar[RewrapState]
    REWRAP_STATE_RUNNING: _ClassVar[RewrapState]
    REWRAP_STATE_FINISHED: _ClassVar[RewrapState]
    REWRAP_STATE_INTERRUPTED: _ClassVar[RewrapState]
KEY_STATE_UNSPECIFIED: KeyState
KEY_STATE_PRIMARY: KeyState
KEY_STATE_ACTIVE: KeyState
KEY_STATE_RETIRED: KeyState
REWRAP_STATE_UNSPECIFIED: RewrapState
REWRAP_STATE_RUNNING: RewrapState
REWRAP_STATE_FINISHED: RewrapState
REWRAP_STATE_INTERRUPTED: RewrapState

class KeyVersion(_message.Message):
    __slots__ = ("version", "state", "create_time", "encryptions", "records", "kek_id")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    ENCRYPTIONS_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    KEK_ID_FIELD_NUMBER: _ClassVar[int]
    version: int
    state: KeyState
    create_time: _timestamp_pb2.Timestamp
    encryptions: int
    records: int
    kek_id: str
    def __init__(self, version: _Optional[int] = ..., state: _Optional[_Union[KeyState, str]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., encryptions: _Optional[int] = ..., records: _Optional[int] = ..., kek_id: _Optional[str] = ...) -> None: ...

class RewrapJob(_message.Message):
    __slots__ = ("state", "primary_version", "start_time", "last_progress_time", "finish_time", "batches", "rewrapped_records", "skipped_records", "failed_records", "remaining_records", "batch_size", "rate", "holder")
    STATE_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_VERSION_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    LAST_PROGRESS_TIME_FIELD_NUMBER: _ClassVar[int]
    FINISH_TIME_FIELD_NUMBER: _ClassVar[int]
    BATCHES_FIELD_NUMBER: _ClassVar[int]
    REWRAPPED_RECORDS_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_RECORDS_FIELD_NUMBER: _ClassVar[int]
    FAILED_RECORDS_FIELD_NUMBER: _ClassVar[int]
    REMAINING_RECORDS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    RATE_FIELD_NUMBER: _ClassVar[int]
    HOLDER_FIELD_NUMBER: _ClassVar[int]
    state: RewrapState
    primary_version: int
    start_time: _timestamp_pb2.Timestamp
    last_progress_time: _timestamp_pb2.Timestamp
    finish_time: _timestamp_pb2.Timestamp
    batches: int
    rewrapped_records: int
    skipped_records: int
    failed_records: int
    remaining_records: int
    batch_size: int
    rate: float
    holder: str
    def __init__(self, state: _Optional[_Union[RewrapState, str]] = ..., primary_version: _Optional[int] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_progress_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finish_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., batches: _Optional[int] = ..., rewrapped_records: _Optional[int] = ..., skipped_records: _Optional[int] = ..., failed_records: _Optional[int] = ..., remaining_records: _Optional[int] = ..., batch_size: _Optional[int] = ..., rate: _Optional[float] = ..., holder: _Optional[str] = ...) -> None: ...

class GetKeyStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetKeyStatusResponse(_message.Message):
    __slots__ = ("versions", "rewrap")
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    REWRAP_FIELD_NUMBER: _ClassVar[int]
    versions: _containers.RepeatedCompositeFieldContainer[KeyVersion]
    rewrap: RewrapJob
    def __init__(self, versions: _Optional[_Iterable[_Union[KeyVersion, _Mapping]]] = ..., rewrap: _Optional[_Union[RewrapJob, _Mapping]] = ...) -> None: ...

class RotateKeyRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RotateKeyResponse(_message.Message):
    __slots__ = ("previous_primary_version", "primary")
    PREVIOUS_PRIMARY_VERSION_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_FIELD_NUMBER: _ClassVar[int]
    previous_primary_version: int
    primary: KeyVersion
    def __init__(self, previous_primary_version: _Optional[int] = ..., primary: _Optional[_Union[KeyVersion, _Mapping]] = ...) -> None: ...

class RewrapKeysRequest(_message.Message):
    __slots__ = ("batch_size", "rate")
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    RATE_FIELD_NUMBER: _ClassVar[int]
    batch_size: int
    rate: float
    def __init__(self, batch_size: _Optional[int] = ..., rate: _Optional[float] = ...) -> None: ...

class RewrapKeysResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: RewrapJob
    def __init__(self, job: _Optional[_Union[RewrapJob, _Mapping]] = ...) -> None: ...

class RetireKeyVersionRequest(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: int
    def __init__(self, version: _Optional[int] = ...) -> None: ...

class RetireKeyVersionResponse(_message.Message):
    __slots__ = ("key_version",)
    KEY_VERSION_FIELD_NUMBER: _ClassVar[int]
    key_version: KeyVersion
    def __init__(self, key_version: _Optional[_Union[KeyVersion, _Mapping]] = ...) -> None: ...
