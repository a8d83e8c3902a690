"""Vault errors → gRPC status with google.rpc.ErrorInfo and BadRequest details.

Only this module knows the mapping. Messages are the errors' own value-free sentences.
"""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from vault import errors

__all__ = ["DOMAIN", "grpc_code", "to_grpc_status", "to_status_message"]

DOMAIN = "vault"

_CODES: tuple[tuple[type[errors.VaultError], grpc.StatusCode], ...] = (
    (errors.InvalidArgumentError, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NotFoundError, grpc.StatusCode.NOT_FOUND),
    (errors.AlreadyExistsError, grpc.StatusCode.ALREADY_EXISTS),
    (errors.FailedPreconditionError, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.AbortedError, grpc.StatusCode.ABORTED),
    (errors.PermissionDeniedError, grpc.StatusCode.PERMISSION_DENIED),
    (errors.UnauthenticatedError, grpc.StatusCode.UNAUTHENTICATED),
    (errors.ResourceExhaustedError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.UnavailableError, grpc.StatusCode.UNAVAILABLE),
    (errors.DeadlineExceededError, grpc.StatusCode.DEADLINE_EXCEEDED),
    (errors.InternalError, grpc.StatusCode.INTERNAL),
)


def grpc_code(exc: errors.VaultError) -> grpc.StatusCode:
    for cls, code in _CODES:
        if isinstance(exc, cls):
            return code
    return grpc.StatusCode.INTERNAL


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def to_status_message(exc: errors.VaultError) -> status_pb2.Status:
    """The error as a google.rpc.Status message (a stream item's own error)."""
    code = grpc_code(exc)
    details = [_pack(error_details_pb2.ErrorInfo(reason=exc.reason, domain=DOMAIN))]
    if isinstance(exc, errors.InvalidArgumentError):
        details.append(
            _pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field=v.field, description=v.description
                        )
                        for v in exc.violations
                    ]
                )
            )
        )
    if isinstance(exc, errors.ResourceExhaustedError) and exc.retry_after is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(max(exc.retry_after, 0.001) * 1e9))
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    return status_pb2.Status(code=code.value[0], message=exc.message, details=details)


def to_grpc_status(exc: errors.VaultError) -> grpc.Status:
    return rpc_status.to_status(to_status_message(exc))
