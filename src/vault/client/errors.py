"""The vault's errors as Python exceptions: the gRPC code, the ErrorInfo reason (domain
``vault``) and the BadRequest field violations, read from ``grpc-status-details-bin``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

__all__ = [
    "AlreadyExistsError",
    "FailedPreconditionError",
    "FieldViolation",
    "InternalError",
    "InvalidArgumentError",
    "NotFoundError",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "UnauthenticatedError",
    "UnavailableError",
    "VaultDeadlineError",
    "VaultError",
    "error_from_rpc",
    "error_from_status",
]


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One invalid field of a request: its path (``address.region_code``) and why."""

    field: str
    description: str


class VaultError(Exception):
    """A call the vault (or the transport) refused. ``reason`` is ErrorInfo's UPPER_SNAKE
    reason ("" when the status has none); ``violations`` name the invalid fields."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        reason: str = "",
        violations: tuple[FieldViolation, ...] = (),
    ) -> None:
        super().__init__(f"{code.name}: {message}" + (f" ({reason})" if reason else ""))
        self.code = code
        self.message = message
        self.reason = reason
        self.violations = violations

    @property
    def fields(self) -> list[str]:
        """The paths of the invalid fields, in the order the vault gave them."""
        return [violation.field for violation in self.violations]


class InvalidArgumentError(VaultError):
    pass


class NotFoundError(VaultError):
    pass


class AlreadyExistsError(VaultError):
    pass


class PermissionDeniedError(VaultError):
    pass


class UnauthenticatedError(VaultError):
    pass


class ResourceExhaustedError(VaultError):
    pass


class FailedPreconditionError(VaultError):
    pass


class UnavailableError(VaultError):
    pass


class VaultDeadlineError(VaultError):
    pass


class InternalError(VaultError):
    pass


_BY_CODE: dict[grpc.StatusCode, type[VaultError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExistsError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPreconditionError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: VaultDeadlineError,
    grpc.StatusCode.INTERNAL: InternalError,
}


def _details(call: Any) -> tuple[str, tuple[FieldViolation, ...]]:
    try:
        status = rpc_status.from_call(call)
    except ValueError:  # the details disagree with the call's code or message
        return "", ()
    return _status_details(status)


def _status_details(status: Any) -> tuple[str, tuple[FieldViolation, ...]]:
    reason = ""
    violations: list[FieldViolation] = []
    for detail in () if status is None else status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations += [FieldViolation(v.field, v.description) for v in bad.field_violations]
    return reason, tuple(violations)


def error_from_status(status: status_pb2.Status) -> VaultError:
    """The VaultError of one stream item's ``error`` (a google.rpc.Status)."""
    code = _CODE_BY_NUMBER.get(status.code, grpc.StatusCode.UNKNOWN)
    reason, violations = _status_details(status)
    return _BY_CODE.get(code, VaultError)(code, status.message, reason, violations)


_CODE_BY_NUMBER = {c.value[0]: c for c in grpc.StatusCode}


def error_from_rpc(error: grpc.RpcError) -> VaultError:
    """The VaultError for a failed call (sync ``grpc.RpcError`` or ``AioRpcError``)."""
    code: grpc.StatusCode = error.code()
    message: str = error.details() or ""
    reason, violations = _details(error)
    return _BY_CODE.get(code, VaultError)(code, message, reason, violations)
