"""The vault's error hierarchy.

Every message here is a fixed, value-free sentence: no submitted value, no digit run,
no key material ever goes into an exception string. The API layer alone maps these
classes to gRPC status codes (api/errors.py).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "AbortedError",
    "AlreadyExistsError",
    "DeadlineExceededError",
    "DecryptionError",
    "FailedPreconditionError",
    "FieldViolation",
    "InternalError",
    "InvalidArgumentError",
    "NotFoundError",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "StoreUnavailableError",
    "UnauthenticatedError",
    "UnavailableError",
    "VaultError",
]


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One invalid field: its path in the request (e.g. ``requests[2].text``) and why."""

    field: str
    description: str

    def prefixed(self, prefix: str) -> FieldViolation:
        return FieldViolation(f"{prefix}.{self.field}" if self.field else prefix, self.description)


class VaultError(Exception):
    """Base class. ``reason`` is an UPPER_SNAKE code sent as google.rpc.ErrorInfo.reason."""

    reason = "INTERNAL"
    # Set once the audit trail holds a record of this failure, so it is recorded once.
    audited = False

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason


class InvalidArgumentError(VaultError):
    """The caller's request is malformed; ``violations`` name the fields."""

    reason = "INVALID_ARGUMENT"

    def __init__(
        self,
        violations: list[FieldViolation] | FieldViolation,
        *,
        reason: str | None = None,
    ) -> None:
        self.violations = [violations] if isinstance(violations, FieldViolation) else violations
        fields = ", ".join(dict.fromkeys(v.field for v in self.violations))
        super().__init__(f"invalid argument: {fields}", reason=reason)

    def prefixed(self, prefix: str) -> InvalidArgumentError:
        return InvalidArgumentError(
            [v.prefixed(prefix) for v in self.violations], reason=self.reason
        )


class NotFoundError(VaultError):
    """The thing does not exist, or exists for another tenant (answered the same way)."""

    reason = "NOT_FOUND"


class AlreadyExistsError(VaultError):
    reason = "ALREADY_EXISTS"


class FailedPreconditionError(VaultError):
    """The request is valid but the system is not in a state to serve it."""

    reason = "FAILED_PRECONDITION"


class AbortedError(VaultError):
    """A concurrent change won (e.g. two rotations at once); retrying may succeed."""

    reason = "ABORTED"


class PermissionDeniedError(VaultError):
    reason = "PERMISSION_DENIED"


class UnauthenticatedError(VaultError):
    reason = "UNAUTHENTICATED"


class ResourceExhaustedError(VaultError):
    reason = "RESOURCE_EXHAUSTED"
    # Seconds after which a retry can succeed (sent as google.rpc.RetryInfo); None = unknown.
    retry_after: float | None = None


class UnavailableError(VaultError):
    """A dependency (the store, the audit trail) cannot serve now; retrying may help."""

    reason = "UNAVAILABLE"


class StoreUnavailableError(UnavailableError):
    reason = "STORE_UNAVAILABLE"


class DeadlineExceededError(VaultError):
    """An outbound call (Forward to a processor) did not finish within its time limit."""

    reason = "DEADLINE_EXCEEDED"


class InternalError(VaultError):
    """A bug or broken invariant; the message is still value-free."""

    reason = "INTERNAL"


class DecryptionError(InternalError):
    """Always the same message, whichever key or check failed (as Tink does)."""

    reason = "DECRYPTION_FAILED"

    def __init__(self) -> None:
        super().__init__("decryption failed")
