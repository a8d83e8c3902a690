"""A typed Python client for the vault: ``Vault`` (blocking) and ``AsyncVault`` (asyncio).

    from vault.client import DataKind, Vault

    with Vault.connect("127.0.0.1:50051", api_key=key, tls=False) as vault:
        card = vault.tokenize(DataKind.PAN, "4242424242424242")
        vault.detokenize(card.token, purpose="refund #1234").value

Results are plain dataclasses; failures raise ``VaultError`` subclasses carrying the gRPC
code, the ErrorInfo ``reason`` and the BadRequest ``violations``.
"""

from vault.client.aio import AsyncVault
from vault.client.calls import RetryPolicy, tokenize_request
from vault.client.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    FieldViolation,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    UnauthenticatedError,
    UnavailableError,
    VaultDeadlineError,
    VaultError,
)
from vault.client.results import (
    Address,
    DataKind,
    KeyStatus,
    KeyVersion,
    LegalHold,
    Revealed,
    RewrapJob,
    Rotated,
    SubjectExport,
    SubjectRecord,
    SubjectReveal,
    TokenFormat,
    TokenInfo,
    Tokenized,
    Updated,
)
from vault.client.sync import Vault

__all__ = [
    "Address",
    "AlreadyExistsError",
    "AsyncVault",
    "DataKind",
    "FailedPreconditionError",
    "FieldViolation",
    "InternalError",
    "InvalidArgumentError",
    "KeyStatus",
    "KeyVersion",
    "LegalHold",
    "NotFoundError",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "RetryPolicy",
    "Revealed",
    "RewrapJob",
    "Rotated",
    "SubjectExport",
    "SubjectRecord",
    "SubjectReveal",
    "TokenFormat",
    "TokenInfo",
    "Tokenized",
    "UnauthenticatedError",
    "UnavailableError",
    "Updated",
    "Vault",
    "VaultDeadlineError",
    "VaultError",
    "tokenize_request",
]
