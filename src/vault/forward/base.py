"""What the Forward use case needs to know about a route and an outbound HTTP client.

The client is an adapter (forward/http.py) behind ``ProcessorClient``; the composition
root builds it. Its failures are vault errors that say whether any byte of the request
may have left the process (``sent``): a forwarded CVC is given back only when none did.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from vault.errors import DeadlineExceededError, UnavailableError
from vault.secrets import SecretBytes

__all__ = [
    "ProcessorAnswer",
    "ProcessorClient",
    "ProcessorTimeoutError",
    "ProcessorUnavailableError",
    "Route",
    "request_sent",
]


@dataclass(frozen=True, slots=True)
class Route:
    """A route as a server uses it: where a forward goes and under which limits."""

    name: str
    url: str  # https only, checked at `routes add`
    method: str
    ca_pem: bytes | None  # the processor must chain to these; None = system roots
    client_cert_pem: bytes | None  # mTLS client certificate chain, if the processor wants one
    client_key: SecretBytes | None  # its private key (PEM), unsealed in memory only
    allow_headers: frozenset[str]  # lower-case names a caller may send and receive
    timeout: float  # seconds for the whole exchange
    max_response_bytes: int
    tokenize_paths: tuple[str, ...]  # JSON paths of the answer whose PANs are tokenized
    revision: int  # moves on with every change: clients are rebuilt when it does

    def __repr__(self) -> str:
        return f"Route(name={self.name!r}, revision={self.revision})"


@dataclass(frozen=True, slots=True)
class ProcessorAnswer:
    """The processor's answer: status, headers (lower-case names) and the body read."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    def __repr__(self) -> str:
        return f"ProcessorAnswer(status={self.status})"


class ProcessorClient(Protocol):
    """Sends one request on a route: the route's URL and method, verified TLS, no
    redirect followed, the route's time and answer-size limits."""

    async def send(self, route: Route, headers: Mapping[str, str], body: bytes) -> ProcessorAnswer:
        """The answer; ProcessorUnavailableError, ProcessorTimeoutError or a
        ResourceExhaustedError (answer too large) otherwise."""
        ...

    def retain(self, routes: Mapping[str, Route]) -> None:
        """Drop the connections of routes no longer configured (after a reload)."""
        ...

    async def close(self) -> None:
        """Close every connection."""
        ...


class ProcessorUnavailableError(UnavailableError):
    """The processor could not be reached, its certificate did not verify, or the
    exchange broke off. ``sent`` is False when no request byte left the process."""

    def __init__(self, message: str, *, reason: str, sent: bool) -> None:
        super().__init__(message, reason=reason)
        self.sent = sent


class ProcessorTimeoutError(DeadlineExceededError):
    """The route's time limit passed; ``sent`` as above."""

    def __init__(self, *, sent: bool) -> None:
        super().__init__(
            "the processor did not answer within the route's time limit",
            reason="PROCESSOR_TIMEOUT",
        )
        self.sent = sent


def request_sent(exc: BaseException) -> bool:
    """Whether the request may have reached the processor when ``exc`` was raised."""
    if isinstance(exc, ProcessorUnavailableError | ProcessorTimeoutError):
        return exc.sent
    return True
