"""HTTP/JSON for callers that cannot speak gRPC (``vaultctl serve --http-listen``).

Every unary method of the served services answers ``POST /vault.v1.<Service>/<Method>``
with a JSON body (the proto3 JSON mapping) and the same ``authorization: Bearer`` header.
Errors are ``google.rpc.Status`` as JSON (``code``, ``message``, ``details`` with
ErrorInfo and BadRequest), with the HTTP status of the gRPC code.

Why a small ASGI app on uvicorn rather than connectrpc's ASGI server: connectrpc serves
its own generated service classes with their own handler signature and context, so the
vault would need a second registration and a second path from headers to caller. Here
the HTTP call is handed to the very handlers grpc calls (the ``rpc`` wrapper: throttling,
authentication from the headers before the body is decoded, refusals audited, error
mapping, metrics), with ``_HttpCall`` standing in for the grpc context and protobuf's
json_format as the request decoder: one copy of the rules. No CORS: browsers are not
callers of a vault.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from dataclasses import dataclass
from typing import Any, NoReturn

import grpc
import uvicorn
from google.protobuf import json_format, message_factory
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

from vault import tracing
from vault.api.rpc import MALFORMED, Decoder
from vault.errors import FailedPreconditionError

__all__ = ["HttpGateway", "HttpServer", "http_status"]

log = logging.getLogger(__name__)

# error_details_pb2 is imported so json_format can render ErrorInfo, BadRequest and
# RetryInfo inside a Status's details (they are looked up in the default pool).
_DETAIL_TYPES = (error_details_pb2.ErrorInfo, error_details_pb2.BadRequest)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

# gRPC code -> HTTP status, as google.rpc.Code documents and grpc-gateway answers.
_HTTP_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}
_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


def http_status(code: int) -> int:
    """The HTTP status answering a google.rpc.Code number."""
    return _HTTP_STATUS.get(_BY_NUMBER.get(code, grpc.StatusCode.UNKNOWN), 500)


class _AbortedError(Exception):
    """Raised by ``_HttpCall.abort*``, as grpc's abort raises: the call's status."""

    def __init__(self, status: status_pb2.Status) -> None:
        super().__init__("aborted")
        self.status = status


class _HttpCall:
    """The part of grpc.aio.ServicerContext the vault's handlers use, for one HTTP call:
    the request headers as invocation metadata, the peer in grpc's form, and abort."""

    __slots__ = ("_metadata", "_peer", "_tls")

    def __init__(self, metadata: tuple[tuple[str, str], ...], peer: str, *, tls: bool) -> None:
        self._metadata = metadata
        self._peer = peer
        self._tls = tls

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def peer(self) -> str:
        return self._peer

    def auth_context(self) -> dict[str, list[bytes]]:
        # uvicorn does not hand the client certificate to the app: on this port a caller
        # is named by its API key (mTLS still gates the connection). The transport is
        # named as grpc names it, so a credential over plaintext from another host is
        # refused TLS_REQUIRED here as on the gRPC port.
        return {"transport_security_type": [b"ssl"]} if self._tls else {}

    async def abort_with_status(self, status: grpc.Status) -> NoReturn:
        for key, value in status.trailing_metadata or ():
            if key == "grpc-status-details-bin" and isinstance(value, bytes):
                raise _AbortedError(status_pb2.Status.FromString(value))
        raise _AbortedError(status_pb2.Status(code=status.code.value[0], message=status.details))

    async def abort(self, code: grpc.StatusCode, details: str = "") -> NoReturn:
        raise _AbortedError(status_pb2.Status(code=code.value[0], message=details))


def _grpc_peer(client: Any) -> str:
    """``ipv4:10.0.0.7:51234`` / ``ipv6:[::1]:5000``, as grpc names a peer: the refusal
    tallies and limits see one peer whichever port it calls."""
    if not client:
        return ""
    host, port = client[0], client[1]
    return f"ipv6:[{host}]:{port}" if ":" in host else f"ipv4:{host}:{port}"


def _json_decoder(cls: type[Message]) -> Decoder:
    def decode(data: bytes) -> Any:
        try:
            return json_format.Parse(data, cls())
        except (json_format.ParseError, UnicodeDecodeError, ValueError):
            return MALFORMED

    return decode


@dataclass(frozen=True, slots=True)
class _Route:
    service: str
    method: str
    handler: Callable[..., Awaitable[Message]]
    decode: Decoder


def _status_body(status: status_pb2.Status) -> bytes:
    return json.dumps(json_format.MessageToDict(status)).encode()


def _refusal(code: grpc.StatusCode, message: str) -> status_pb2.Status:
    """A refusal made before any handler runs (wrong path, verb, type or size)."""
    return status_pb2.Status(code=code.value[0], message=message)


class HttpGateway:
    """The ASGI app: routes ``POST /<service>/<method>`` to the registered handlers."""

    def __init__(self, max_body_bytes: int) -> None:
        self._routes: dict[str, _Route] = {}
        self._max_body = max_body_bytes

    def add_service(self, service: ServiceDescriptor, servicer: object) -> None:
        """Serve the unary methods of ``service`` (streams are gRPC only)."""
        for method in service.methods:
            if method.client_streaming or method.server_streaming:
                continue
            request_cls = message_factory.GetMessageClass(method.input_type)
            self._routes[f"/{service.full_name}/{method.name}"] = _Route(
                service.full_name,
                method.name,
                getattr(servicer, method.name),
                _json_decoder(request_cls),
            )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        route = self._routes.get(scope["path"])
        refusal = self._check(scope, route)
        body = b""
        if refusal is None:
            body_or_none = await self._body(receive)
            if body_or_none is None:
                refusal = _refusal(grpc.StatusCode.RESOURCE_EXHAUSTED, "the body is too large")
            else:
                body = body_or_none
        if refusal is not None or route is None:
            await _respond(send, _refusal_or_unknown(refusal), None)
            return
        status, payload = await self._call(route, scope, body)
        await _respond(send, status, payload)

    def _check(self, scope: Scope, route: _Route | None) -> status_pb2.Status | None:
        if route is None:
            return _refusal(grpc.StatusCode.UNIMPLEMENTED, "no such method")
        if scope["method"] != "POST":
            return _refusal(grpc.StatusCode.UNIMPLEMENTED, "methods are called with POST")
        content_type = _header(scope, b"content-type").split(";", 1)[0].strip().lower()
        if content_type != "application/json":
            return _refusal(
                grpc.StatusCode.INVALID_ARGUMENT, "the content type must be application/json"
            )
        return None

    async def _body(self, receive: Receive) -> bytes | None:
        chunks: list[bytes] = []
        size = 0
        while True:
            event = await receive()
            chunk = event.get("body", b"")
            size += len(chunk)
            if size > self._max_body:
                return None
            chunks.append(chunk)
            if not event.get("more_body", False):
                return b"".join(chunks)

    async def _call(
        self, route: _Route, scope: Scope, body: bytes
    ) -> tuple[status_pb2.Status, bytes | None]:
        metadata = tuple(
            (name.decode("latin-1").lower(), value.decode("latin-1"))
            for name, value in scope["headers"]
        )
        call = _HttpCall(
            metadata, _grpc_peer(scope.get("client")), tls=scope.get("scheme") == "https"
        )
        with tracing.http_span(route.service, route.method, metadata) as span:
            try:
                response = await route.handler(body, call, decode=route.decode)
            except _AbortedError as aborted:
                tracing.set_code(span, aborted.status.code)
                return aborted.status, None
            except Exception as exc:  # noqa: BLE001 - the rpc wrapper answers the rest
                log.error("internal error in HTTP %s: %s", route.method, type(exc).__name__)
                tracing.set_code(span, grpc.StatusCode.INTERNAL.value[0])
                return _refusal(grpc.StatusCode.INTERNAL, "internal error"), None
            tracing.set_code(span, 0)
        return status_pb2.Status(), json_format.MessageToJson(response, indent=None).encode()


def _refusal_or_unknown(refusal: status_pb2.Status | None) -> status_pb2.Status:
    return refusal or _refusal(grpc.StatusCode.UNIMPLEMENTED, "no such method")


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope["headers"]:
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return ""


async def _respond(send: Send, status: status_pb2.Status, payload: bytes | None) -> None:
    body = payload if payload is not None else _status_body(status)
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    retry = _retry_after(status)
    if retry is not None:
        headers.append((b"retry-after", b"%d" % retry))
    code = http_status(status.code)
    await send({"type": "http.response.start", "status": code, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _retry_after(status: status_pb2.Status) -> int | None:
    """Whole seconds of the status's RetryInfo, for HTTP's Retry-After."""
    for detail in status.details:
        info = error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            nanos: int = info.retry_delay.ToNanoseconds()
            return max(1, -(-nanos // 1_000_000_000))
    return None


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # vaultctl serve owns SIGTERM and SIGINT; HttpServer.stop ends this server.
        yield


@dataclass(frozen=True, slots=True)
class HttpTls:
    """Paths of the gRPC port's TLS files: the HTTP port speaks TLS when gRPC does."""

    cert: str
    key: str
    client_ca: str = ""


class HttpServer:
    """uvicorn serving an HttpGateway on ``listen``; ``await start()``, ``await stop()``."""

    def __init__(
        self,
        gateway: HttpGateway,
        listen: str,
        *,
        tls: HttpTls | None = None,
        max_concurrency: int = 0,
        reuse_port: bool = False,
    ) -> None:
        self._gateway = gateway
        self._listen = listen
        self._tls = tls
        self._max_concurrency = max_concurrency
        self._reuse_port = reuse_port
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None
        self.port = 0

    def _socket(self) -> socket.socket:
        host, _, port = self._listen.rpartition(":")
        host = host.strip("[]") or "127.0.0.1"
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if self._reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, int(port)))
        except (OSError, ValueError):
            sock.close()
            raise FailedPreconditionError(
                "cannot listen on the HTTP address", reason="LISTEN_FAILED"
            ) from None
        sock.set_inheritable(True)
        return sock

    def _config(self) -> uvicorn.Config:
        tls = self._tls
        return uvicorn.Config(
            self._gateway,
            lifespan="off",
            log_config=None,
            access_log=False,  # an access log line would name paths and peers only, but
            # the vault's own metrics and audit already count every call
            server_header=False,
            proxy_headers=False,  # the peer is the socket's, as on the gRPC port
            limit_concurrency=self._max_concurrency or None,
            ssl_certfile=tls.cert if tls else None,
            ssl_keyfile=tls.key if tls else None,
            ssl_ca_certs=tls.client_ca if tls and tls.client_ca else None,
            ssl_cert_reqs=ssl.CERT_REQUIRED if tls and tls.client_ca else ssl.CERT_NONE,
        )

    async def start(self) -> None:
        sock = self._socket()
        self.port = sock.getsockname()[1]
        self._server = server = _Server(self._config())
        self._task = asyncio.create_task(server.serve(sockets=[sock]), name="http-json")
        while not server.started:
            if self._task.done():
                self._task.result()  # a failed start raises here
                raise FailedPreconditionError(
                    "the HTTP server did not start", reason="LISTEN_FAILED"
                )
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        server, task = self._server, self._task
        self._server = self._task = None
        if server is None or task is None:
            return
        server.should_exit = True
        with contextlib.suppress(Exception):
            await task
