"""What the client's calls return: plain Python values (str, int, datetime, dict), never
protobuf messages, and the conversions from the wire."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from google.protobuf import timestamp_pb2

from vault.domain.model import DataKind, TokenFormat
from vault.v1 import key_service_pb2 as keys_pb
from vault.v1 import subject_service_pb2 as subjects_pb
from vault.v1 import token_service_pb2 as tokens_pb
from vault.v1 import types_pb2

__all__ = [
    "Address",
    "DataKind",
    "KeyStatus",
    "KeyVersion",
    "LegalHold",
    "Revealed",
    "RewrapJob",
    "Rotated",
    "SubjectExport",
    "SubjectRecord",
    "SubjectReveal",
    "TokenFormat",
    "TokenInfo",
    "Tokenized",
    "Updated",
]


@dataclass(frozen=True, slots=True)
class Address:
    """A postal address (google.type.PostalAddress's fields); only region_code and one of
    lines, locality or postal_code are required."""

    region_code: str
    lines: tuple[str, ...] = ()
    locality: str = ""
    postal_code: str = ""
    administrative_area: str = ""
    recipient: str = ""

    def __repr__(self) -> str:
        return "Address(<redacted>)"  # personal data: never printed by accident

    def to_proto(self) -> types_pb2.Address:
        return types_pb2.Address(
            recipient=self.recipient,
            lines=list(self.lines),
            locality=self.locality,
            administrative_area=self.administrative_area,
            postal_code=self.postal_code,
            region_code=self.region_code,
        )

    @classmethod
    def from_proto(cls, msg: types_pb2.Address) -> Address:
        return cls(
            region_code=msg.region_code,
            lines=tuple(msg.lines),
            locality=msg.locality,
            postal_code=msg.postal_code,
            administrative_area=msg.administrative_area,
            recipient=msg.recipient,
        )


def _time(msg: timestamp_pb2.Timestamp, present: bool) -> datetime | None:
    return msg.ToDatetime(tzinfo=UTC) if present else None


def _value(msg: tokens_pb.DetokenizeResponse | subjects_pb.SubjectRecord) -> str | Address:
    if msg.WhichOneof("value") == "address":
        return Address.from_proto(msg.address)
    return msg.text


@dataclass(frozen=True, slots=True)
class Tokenized:
    token: str
    masked: str
    created: bool  # False when a deterministic or retried (same request id) call found it
    fingerprint: str = ""  # only for callers holding the fingerprint scope
    expire_time: datetime | None = None

    @classmethod
    def from_proto(cls, msg: tokens_pb.TokenizeResponse) -> Tokenized:
        return cls(
            token=msg.token,
            masked=msg.masked,
            created=msg.created,
            fingerprint=msg.fingerprint,
            expire_time=_time(msg.expire_time, msg.HasField("expire_time")),
        )


@dataclass(frozen=True, slots=True)
class Revealed:
    token: str
    kind: DataKind
    value: str | Address = field(repr=False)
    metadata: dict[str, str] = field(default_factory=dict)
    subject: str = ""

    @classmethod
    def from_proto(cls, msg: tokens_pb.DetokenizeResponse) -> Revealed:
        return cls(msg.token, DataKind(msg.kind), _value(msg), dict(msg.metadata), msg.subject)


@dataclass(frozen=True, slots=True)
class TokenInfo:
    token: str
    kind: DataKind
    format: TokenFormat
    masked: str
    fingerprint: str
    subject: str
    metadata: dict[str, str]
    deterministic: bool
    create_time: datetime | None
    expire_time: datetime | None
    key_version: int

    @classmethod
    def from_proto(cls, msg: tokens_pb.GetTokenResponse) -> TokenInfo:
        return cls(
            token=msg.token,
            kind=DataKind(msg.kind),
            format=TokenFormat(msg.format),
            masked=msg.masked,
            fingerprint=msg.fingerprint,
            subject=msg.subject,
            metadata=dict(msg.metadata),
            deterministic=msg.deterministic,
            create_time=_time(msg.create_time, msg.HasField("create_time")),
            expire_time=_time(msg.expire_time, msg.HasField("expire_time")),
            key_version=msg.key_version,
        )


@dataclass(frozen=True, slots=True)
class Updated:
    token: str
    masked: str
    fingerprint: str = ""


@dataclass(frozen=True, slots=True)
class KeyVersion:
    version: int
    state: str  # "PRIMARY", "ACTIVE" or "RETIRED"
    create_time: datetime | None
    encryptions: int
    records: int
    kek_id: str

    @classmethod
    def from_proto(cls, msg: keys_pb.KeyVersion) -> KeyVersion:
        return cls(
            version=msg.version,
            state=keys_pb.KeyState.Name(msg.state).removeprefix("KEY_STATE_"),
            create_time=_time(msg.create_time, msg.HasField("create_time")),
            encryptions=msg.encryptions,
            records=msg.records,
            kek_id=msg.kek_id,
        )


@dataclass(frozen=True, slots=True)
class RewrapJob:
    state: str  # "RUNNING", "FINISHED", "INTERRUPTED" ("UNSPECIFIED": no run yet)
    primary_version: int
    start_time: datetime | None
    last_progress_time: datetime | None
    finish_time: datetime | None
    batches: int
    rewrapped_records: int
    skipped_records: int
    failed_records: int
    remaining_records: int
    batch_size: int
    rate: float
    holder: str

    @classmethod
    def from_proto(cls, msg: keys_pb.RewrapJob) -> RewrapJob:
        return cls(
            state=keys_pb.RewrapState.Name(msg.state).removeprefix("REWRAP_STATE_"),
            primary_version=msg.primary_version,
            start_time=_time(msg.start_time, msg.HasField("start_time")),
            last_progress_time=_time(msg.last_progress_time, msg.HasField("last_progress_time")),
            finish_time=_time(msg.finish_time, msg.HasField("finish_time")),
            batches=msg.batches,
            rewrapped_records=msg.rewrapped_records,
            skipped_records=msg.skipped_records,
            failed_records=msg.failed_records,
            remaining_records=msg.remaining_records,
            batch_size=msg.batch_size,
            rate=msg.rate,
            holder=msg.holder,
        )


@dataclass(frozen=True, slots=True)
class KeyStatus:
    versions: tuple[KeyVersion, ...]
    rewrap: RewrapJob | None

    @property
    def primary(self) -> KeyVersion:
        return next(v for v in self.versions if v.state == "PRIMARY")

    @classmethod
    def from_proto(cls, msg: keys_pb.GetKeyStatusResponse) -> KeyStatus:
        rewrap = RewrapJob.from_proto(msg.rewrap) if msg.HasField("rewrap") else None
        return cls(tuple(KeyVersion.from_proto(v) for v in msg.versions), rewrap)


@dataclass(frozen=True, slots=True)
class Rotated:
    previous_primary_version: int
    primary: KeyVersion


@dataclass(frozen=True, slots=True)
class SubjectRecord:
    token: str
    kind: DataKind
    value: str | Address = field(repr=False)
    metadata: dict[str, str]
    create_time: datetime | None
    expire_time: datetime | None


@dataclass(frozen=True, slots=True)
class SubjectReveal:
    time: datetime | None
    caller: str
    purpose: str
    token: str
    request_id: str


@dataclass(frozen=True, slots=True)
class SubjectExport:
    records: tuple[SubjectRecord, ...]
    reveals: tuple[SubjectReveal, ...]
    held: bool

    @classmethod
    def from_proto(cls, msg: subjects_pb.ExportSubjectResponse) -> SubjectExport:
        records = tuple(
            SubjectRecord(
                token=r.token,
                kind=DataKind(r.kind),
                value=_value(r),
                metadata=dict(r.metadata),
                create_time=_time(r.create_time, r.HasField("create_time")),
                expire_time=_time(r.expire_time, r.HasField("expire_time")),
            )
            for r in msg.records
        )
        reveals = tuple(
            SubjectReveal(
                _time(r.time, r.HasField("time")), r.caller, r.purpose, r.token, r.request_id
            )
            for r in msg.reveals
        )
        return cls(records, reveals, msg.held)


@dataclass(frozen=True, slots=True)
class LegalHold:
    held: bool
    changed: bool
