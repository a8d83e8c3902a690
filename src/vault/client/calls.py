"""What the sync and asyncio clients share: the channel's target and credentials, the
requests they send, and when a failed call may be sent again."""

from __future__ import annotations

import random
import secrets
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import cast

import grpc
from google.protobuf import duration_pb2

from vault.auth.transport import is_local_address
from vault.client.results import Address, DataKind, TokenFormat
from vault.v1 import token_service_pb2 as tokens_pb
from vault.v1 import types_pb2

__all__ = ["RetryPolicy", "Target", "new_request_id", "tokenize_request"]

DEFAULT_TIMEOUT = 10.0  # seconds per attempt; a reveal waits on the audit group commit
# Only UNAVAILABLE says the call did not happen or may be sent again (AIP-194).
RETRIED_CODES = frozenset({grpc.StatusCode.UNAVAILABLE})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with full jitter for calls that are safe to repeat."""

    attempts: int = 4
    initial_backoff: float = 0.05
    max_backoff: float = 1.0
    multiplier: float = 2.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait before attempt number ``attempt + 1`` (attempt counts from 1)."""
        ceiling = min(self.max_backoff, self.initial_backoff * self.multiplier ** (attempt - 1))
        return random.uniform(0, ceiling)  # jitter, not a secret


NO_RETRY = RetryPolicy(attempts=1)


@dataclass(frozen=True, slots=True)
class Target:
    """Where the vault is and how to reach it."""

    address: str  # host:port
    credentials: grpc.ChannelCredentials | None  # None: plaintext
    metadata: tuple[tuple[str, str], ...]

    @classmethod
    def build(
        cls,
        address: str,
        api_key: str | None,
        tls: bool | grpc.ChannelCredentials,
        insecure: bool,
    ) -> Target:
        if tls is False and not insecure and not is_local_address(address):
            # An API key and card numbers in the clear over a network: refuse (the rule
            # the server and vaultctl apply: loopback or a Unix socket only).
            raise ValueError("plaintext to a non-loopback address needs insecure=True")
        if tls is True:
            credentials: grpc.ChannelCredentials | None = grpc.ssl_channel_credentials()
        elif tls is False:
            credentials = None
        else:
            credentials = tls
        metadata = () if api_key is None else (("authorization", f"Bearer {api_key}"),)
        return cls(address, credentials, metadata)


def _ttl(ttl: timedelta | float | None) -> duration_pb2.Duration | None:
    if ttl is None:
        return None
    out = duration_pb2.Duration()
    out.FromTimedelta(ttl if isinstance(ttl, timedelta) else timedelta(seconds=ttl))
    return out


def new_request_id() -> str:
    """``py-`` and 27 random lower-case letters (126 bits). No digits: the vault refuses
    a request id holding a Luhn-valid run of 12 to 19 digits (it could be a card number
    in the audit trail), which about 1 random UUID in 200 does."""
    return "py-" + "".join(secrets.choice(string.ascii_lowercase) for _ in range(27))


def tokenize_request(
    kind: DataKind,
    value: str | Address,
    *,
    format: TokenFormat = TokenFormat.UNSPECIFIED,  # noqa: A002 (the proto field's name)
    deterministic: bool = False,
    subject: str = "",
    metadata: Mapping[str, str] | None = None,
    ttl: timedelta | float | None = None,
    request_id: str | None = None,
) -> tokens_pb.TokenizeRequest:
    """A TokenizeRequest. Without a request id the client makes one (so a retry returns
    the first attempt's token), except for CVCs, which the vault keeps without one."""
    if request_id is None:
        request_id = "" if kind == DataKind.CVC else new_request_id()
    request = tokens_pb.TokenizeRequest(
        kind=cast("types_pb2.DataKind", int(kind)),
        format=cast("types_pb2.TokenFormat", int(format)),
        deterministic=deterministic,
        subject=subject,
        metadata=dict(metadata or {}),
        request_id=request_id,
        ttl=_ttl(ttl),
    )
    if isinstance(value, Address):
        request.address.CopyFrom(value.to_proto())
    else:
        request.text = value
    return request


def tokenize_retry(
    requests: Sequence[tokens_pb.TokenizeRequest], policy: RetryPolicy
) -> RetryPolicy:
    """Tokenize is repeated only when every value carries a request id."""
    return policy if all(r.request_id for r in requests) else NO_RETRY


def update_request(
    token: str,
    value: str | Address,
    metadata: Mapping[str, str] | None,
    replace_metadata: bool,
) -> tokens_pb.UpdateTokenRequest:
    request = tokens_pb.UpdateTokenRequest(
        token=token, metadata=dict(metadata or {}), replace_metadata=replace_metadata
    )
    if isinstance(value, Address):
        request.address.CopyFrom(value.to_proto())
    else:
        request.text = value
    return request
