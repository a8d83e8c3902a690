"""The outbound HTTP client of Forward: httpx (HTTP/1.1, and HTTP/2 where the processor
offers it through ALPN), one client and connection pool per route, rebuilt when the
route's revision moves.

TLS is always verified: against the route's CA when it has one, else the system roots;
the host name is checked. No redirect is followed, no proxy or certificate setting is
taken from the environment, the whole exchange is bounded by the route's timeout and the
answer body (decoded) by its max_response_bytes. Errors name what failed, never the
request: an httpx exception's text (which may quote the URL) is not kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx

from vault.errors import ResourceExhaustedError
from vault.forward.base import (
    ProcessorAnswer,
    ProcessorTimeoutError,
    ProcessorUnavailableError,
    Route,
)
from vault.forward.routes import MAX_TIMEOUT
from vault.secrets import SecretBytes

__all__ = ["HttpxProcessorClient", "route_ssl_context"]

log = logging.getLogger(__name__)

# Connections a route keeps to its processor.
_MAX_CONNECTIONS = 64
_KEEPALIVE = 16


@contextlib.contextmanager
def _memory_file(data: bytes) -> Iterator[str]:
    """A path to ``data`` for ssl's file-only loaders: an anonymous memory file on Linux
    (never on disk), else a 0600 file in a private temporary directory, gone at exit."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("route-secret", os.MFD_CLOEXEC)
        try:
            os.write(fd, data)
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    with tempfile.TemporaryDirectory() as directory:  # pragma: no cover - not Linux
        path = Path(directory) / "secret.pem"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        yield str(path)


def route_ssl_context(route: Route) -> ssl.SSLContext:
    """Verified TLS 1.2+: the route's CA (only it) or the system roots; its client
    certificate for mTLS; ALPN offers h2 and http/1.1."""
    cadata = route.ca_pem.decode("ascii") if route.ca_pem else None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=cadata)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if route.client_cert_pem is not None and route.client_key is not None:
        key: SecretBytes = route.client_key
        with _memory_file(route.client_cert_pem) as cert, _memory_file(key.reveal()) as keyfile:
            context.load_cert_chain(cert, keyfile)
    context.set_alpn_protocols(["h2", "http/1.1"])
    return context


def _client(route: Route) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        http2=True,
        verify=route_ssl_context(route),
        follow_redirects=False,
        trust_env=False,
        timeout=httpx.Timeout(route.timeout),
        limits=httpx.Limits(max_connections=_MAX_CONNECTIONS, max_keepalive_connections=_KEEPALIVE),
    )


def _connect_error(exc: httpx.ConnectError) -> ProcessorUnavailableError:
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, ssl.SSLError):
        cause = cause.__cause__ or cause.__context__
    if cause is not None:
        return ProcessorUnavailableError(
            "the processor's TLS certificate did not verify, or the handshake failed",
            reason="PROCESSOR_TLS_FAILED",
            sent=False,
        )
    return ProcessorUnavailableError(
        "the processor cannot be reached", reason="PROCESSOR_UNREACHABLE", sent=False
    )


class HttpxProcessorClient:
    """ProcessorClient over httpx, one AsyncClient per route."""

    def __init__(self) -> None:
        self._clients: dict[str, tuple[int, httpx.AsyncClient]] = {}
        # Clients replaced or dropped, closed once their in-flight calls had time to end.
        self._retired: dict[asyncio.Task[None], httpx.AsyncClient] = {}

    def __repr__(self) -> str:
        return f"HttpxProcessorClient({len(self._clients)} routes)"

    def _for(self, route: Route) -> httpx.AsyncClient:
        known = self._clients.get(route.name)
        if known is not None and known[0] == route.revision:
            return known[1]
        client = _client(route)
        self._clients[route.name] = (route.revision, client)
        if known is not None:
            self._retire(known[1], route.timeout + 1.0)
        return client

    def retain(self, routes: Mapping[str, Route]) -> None:
        for name in [n for n in self._clients if n not in routes]:
            _, client = self._clients.pop(name)
            self._retire(client, MAX_TIMEOUT + 1.0)

    def _retire(self, client: httpx.AsyncClient, delay: float) -> None:
        # Calls still in flight on the old client finish within its timeout.
        task = asyncio.create_task(self._close_later(client, delay))
        self._retired[task] = client
        task.add_done_callback(self._retired.pop)

    @staticmethod
    async def _close_later(client: httpx.AsyncClient, delay: float) -> None:
        await asyncio.sleep(delay)
        await client.aclose()

    async def send(self, route: Route, headers: Mapping[str, str], body: bytes) -> ProcessorAnswer:
        client = self._for(route)
        try:
            async with asyncio.timeout(route.timeout):
                return await self._exchange(client, route, headers, body)
        except httpx.ConnectTimeout:
            raise ProcessorTimeoutError(sent=False) from None
        except (TimeoutError, httpx.TimeoutException):
            raise ProcessorTimeoutError(sent=True) from None
        except httpx.ConnectError as exc:
            raise _connect_error(exc) from None
        except (httpx.HTTPError, OSError) as exc:
            log.warning("forward on route %s failed: %s", route.name, type(exc).__name__)
            raise ProcessorUnavailableError(
                "the exchange with the processor broke off",
                reason="PROCESSOR_FAILED",
                sent=True,
            ) from None

    @staticmethod
    async def _exchange(
        client: httpx.AsyncClient, route: Route, headers: Mapping[str, str], body: bytes
    ) -> ProcessorAnswer:
        request = client.build_request(route.method, route.url, headers=dict(headers), content=body)
        response = await client.send(request, stream=True)
        try:
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > route.max_response_bytes:
                    raise ResourceExhaustedError(
                        "the processor's answer is larger than the route allows",
                        reason="PROCESSOR_ANSWER_TOO_LARGE",
                    )
                chunks.append(chunk)
        finally:
            await response.aclose()
        answer_headers = {k.lower(): v for k, v in response.headers.items()}
        return ProcessorAnswer(response.status_code, answer_headers, b"".join(chunks))

    async def close(self) -> None:
        clients, self._clients = self._clients, {}
        for _, client in clients.values():
            await client.aclose()
        retired, self._retired = self._retired, {}
        for task, client in retired.items():
            task.cancel()
            await client.aclose()
