"""Calling any RPC of the real server with raw bytes, and what a caller can read back."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import grpc
from google.protobuf.descriptor import FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

from vault.v1 import (
    key_service_pb2,
    seal_service_pb2,
    subject_service_pb2,
    token_service_pb2,
    types_pb2,
)

SERVICES = [
    token_service_pb2.DESCRIPTOR.services_by_name["TokenService"],
    key_service_pb2.DESCRIPTOR.services_by_name["KeyService"],
    subject_service_pb2.DESCRIPTOR.services_by_name["SubjectService"],
    seal_service_pb2.DESCRIPTOR.services_by_name["SealService"],
]
METHODS: list[MethodDescriptor] = [m for s in SERVICES for m in s.methods]
# Codes that mean the server failed, not the request.
SERVER_FAULTS = frozenset(
    {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED}
)


def path(method: MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


@dataclass(frozen=True)
class Outcome:
    code: grpc.StatusCode
    texts: list[str]  # everything human-readable in the answer


def call_raw(
    channel: grpc.Channel, method: MethodDescriptor, body: bytes, md: Iterable[tuple[str, str]]
) -> Outcome:
    """One unary call with identity serializers: the bytes go out as they are."""
    stub = channel.unary_unary(path(method), request_serializer=None, response_deserializer=None)
    try:
        stub(body, metadata=tuple(md), timeout=20)
    except grpc.RpcError as exc:
        return Outcome(exc.code(), _texts(exc))  # type: ignore[attr-defined]
    return Outcome(grpc.StatusCode.OK, [])


def _texts(exc: grpc.RpcError) -> list[str]:
    texts = [exc.details() or ""]  # type: ignore[attr-defined]
    for key, value in exc.trailing_metadata() or ():  # type: ignore[attr-defined]
        if key != "grpc-status-details-bin":
            texts.append(value if isinstance(value, str) else value.decode("utf-8", "replace"))
            continue
        status = status_pb2.Status.FromString(value)
        texts.append(status.message)
        for detail in status.details:
            for cls in (
                error_details_pb2.BadRequest,
                error_details_pb2.ErrorInfo,
                error_details_pb2.LocalizedMessage,
            ):
                if detail.Is(cls.DESCRIPTOR):
                    unpacked = cls()
                    detail.Unpack(unpacked)
                    texts.append(str(unpacked))
    return texts


def strings_in(message: Message) -> list[str]:
    """Every string a request carries, nested ones and map values included."""
    out: list[str] = []
    for field, value in message.ListFields():
        items = value.values() if _is_map(field) else value if field.is_repeated else [value]
        for item in items:
            if isinstance(item, Message):
                out.extend(strings_in(item))
            elif isinstance(item, str):
                out.append(item)
    return out


def _is_map(field: FieldDescriptor) -> bool:
    return field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type.GetOptions().map_entry


# The fixed words of answers (enum value names, reasons): a submitted string that is part of
# one (say "DATA_KIN") is found in a message that names a kind, and is no echo.
_VOCABULARY = " ".join(
    v.name for f in (types_pb2.DESCRIPTOR,) for e in f.enum_types_by_name.values() for v in e.values
)
_MIN_ECHO = 8  # a submitted string this long found in an answer is an echo, not chance
_MIN_DIGITS = 6  # and so is a run of this many of its digits


def assert_no_echo(texts: list[str], submitted: list[str]) -> None:
    """No submitted string (stripped, 8+ characters) or 6-digit run of one in the answer."""
    joined = "\n".join(texts)
    squeezed = re.sub(r"[ \-]", "", joined)
    for value in submitted:
        stripped = value.strip()
        if len(stripped) >= _MIN_ECHO and stripped not in _VOCABULARY:
            assert stripped not in joined, "a submitted value appears in the answer"
        for run in re.findall(r"[0-9]+", re.sub(r"[ \-]", "", value)):
            for i in range(len(run) - _MIN_DIGITS + 1):
                window = run[i : i + _MIN_DIGITS]
                assert window not in squeezed, "digits of a submitted value appear"
