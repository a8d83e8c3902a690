from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class GetSealStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetSealStatusResponse(_message.Message):
    __slots__ = ("sealed", "threshold", "shares_submitted", "share_count")
    SEALED_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    SHARES_SUBMITTED_FIELD_NUMBER: _ClassVar[int]
    SHARE_COUNT_FIELD_NUMBER: _ClassVar[int]
    sealed: bool
    threshold: int
    shares_submitted: int
    share_count: int
    def __init__(self, sealed: _Optional[bool] = ..., threshold: _Optional[int] = ..., shares_submitted: _Optional[int] = ..., share_count: _Optional[int] = ...) -> None: ...

class SubmitUnsealShareRequest(_message.Message):
    __slots__ = ("share",)
    SHARE_FIELD_NUMBER: _ClassVar[int]
    share: str
    def __init__(self, share: _Optional[str] = ...) -> None: ...

class SubmitUnsealShareResponse(_message.Message):
    __slots__ = ("sealed", "threshold", "shares_submitted")
    SEALED_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    SHARES_SUBMITTED_FIELD_NUMBER: _ClassVar[int]
    sealed: bool
    threshold: int
    shares_submitted: int
    def __init__(self, sealed: _Optional[bool] = ..., threshold: _Optional[int] = ..., shares_submitted: _Optional[int] = ...) -> None: ...
