"""What every vault RPC handler shares: authentication from the headers before the body
is decoded, refusals that cost the caller (tallied into the audit trail, throttled per
peer), error mapping, metrics, and registration with a request decoder that turns
undecodable bytes into INVALID_ARGUMENT.

``rpc`` does the job of an interceptor. It is a wrapper because a grpc.aio interceptor
adds a coroutine and a handler lookup to every call on the hot path.
"""

from __future__ import annotations

import functools
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError, Message

from vault import metrics, tracing
from vault.api.errors import grpc_code, to_grpc_status
from vault.audit.base import ACTION_AUTHENTICATE, ACTION_AUTHORIZE, AuditSink
from vault.audit.refusals import RefusalKey
from vault.auth.apikeys import Authenticator
from vault.auth.mtls import typed_certificate_identity, untyped
from vault.auth.policy import Caller
from vault.auth.ratelimit import RefusalsThrottledError
from vault.auth.transport import TLS_REQUIRED, is_local_peer
from vault.clock import Clock
from vault.config import Config
from vault.domain.model import RequestContext
from vault.domain.validation import check_free_text, free_text_violation
from vault.errors import (
    FailedPreconditionError,
    FieldViolation,
    InvalidArgumentError,
    PermissionDeniedError,
    UnauthenticatedError,
    VaultError,
)

__all__ = [
    "MALFORMED",
    "REFUSALS",
    "Authenticated",
    "Context",
    "Decoder",
    "add_service",
    "authorization_of",
    "cert_identity",
    "check_throttle",
    "check_transport",
    "connection_options",
    "decode_request",
    "peer_host",
    "refused",
    "request_context",
    "rpc",
]

log = logging.getLogger(__name__)

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Context = grpc.aio.ServicerContext[Any, Any]


class _Malformed:
    """Stands in for a request whose bytes did not decode."""

    __slots__ = ()


MALFORMED = _Malformed()


class Authenticated(Protocol):
    authenticator: Authenticator
    audit: AuditSink | None
    clock: Clock


Handler = Callable[[Any, Caller, Req, Context], Awaitable[Resp]]
# Request bytes -> the request message, or MALFORMED.
Decoder = Callable[[bytes], Any]


def authorization_of(context: Context) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            return value if isinstance(value, str) else None
    return None


def _texts(values: Any) -> list[str]:
    return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in values]


def cert_identity(context: Context) -> str | None:
    """The typed caller identity (``uri:…``/``cn:…``) of the call's verified client
    certificate (see auth.mtls), or None on a plaintext or server-only-TLS connection.

    grpc names the certificate's URI SANs in ``peer_uri`` (grpc >= 1.62); older
    releases only list every SAN (DNS, IP and URI alike) in
    ``x509_subject_alternative_name``, of which the ones with a scheme are URIs.
    """
    try:
        auth = context.auth_context() or {}
    except Exception:  # noqa: BLE001 - no transport security: no certificate
        return None
    if "peer_uri" in auth:
        uris = _texts(auth["peer_uri"])
    else:
        uris = [n for n in _texts(auth.get("x509_subject_alternative_name", ())) if "://" in n]
    return typed_certificate_identity(uris, _texts(auth.get("x509_common_name", ())))


# A client's x-request-id is kept when it is short printable ASCII; otherwise (or when
# absent) the vault makes one up, so every audited call has an id.
_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,128}")


def request_context(context: Context, *, strict: bool = True) -> RequestContext:
    """The call's request id and peer, for the audit trail. The id is audited in clear:
    one holding a card number is refused (INVALID_ARGUMENT naming ``x-request-id``), or,
    not ``strict`` (recording a call refused anyway), replaced by a made-up one."""
    request_id = ""
    for key, value in context.invocation_metadata() or ():
        if key == "x-request-id" and isinstance(value, str) and _REQUEST_ID.fullmatch(value):
            request_id = value
            break
    if request_id and free_text_violation("x-request-id", request_id) is not None:
        if strict:
            check_free_text("x-request-id", request_id)
        request_id = ""
    try:
        peer = context.peer() or ""
    except Exception:  # noqa: BLE001 - a peer the transport cannot name is not fatal
        peer = ""
    return RequestContext(request_id or str(uuid.uuid4()), peer)


def peer_host(peer: str) -> str:
    """The peer's address without its port (``ipv4:10.0.0.7:51234`` -> ``ipv4:10.0.0.7``,
    ``ipv6:[::1]:5000`` -> ``ipv6:[::1]``): a client opening a new connection per call is
    still one peer to the refusal tallies and limits."""
    scheme, sep, rest = peer.partition(":")
    if not sep or scheme not in {"ipv4", "ipv6"}:
        return peer
    host, colon, port = rest.rpartition(":")
    return f"{scheme}:{host}" if colon and port.isdigit() else peer


def _peer(context: Context) -> str:
    try:
        return peer_host(context.peer() or "")
    except Exception:  # noqa: BLE001 - a peer the transport cannot name is not fatal
        return ""


def check_transport(context: Context) -> None:
    """A call from another host over plaintext is refused (TLS_REQUIRED) before its
    credential is looked at: an API key or a custodian share sent in clear is already
    exposed, and the vault does not take part in it. Loopback and Unix sockets pass."""
    try:
        peer = context.peer() or ""
    except Exception:  # noqa: BLE001 - an unnamed peer is not local
        peer = ""
    if is_local_peer(peer):
        return
    try:
        security = _texts((context.auth_context() or {}).get("transport_security_type", ()))
    except Exception:  # noqa: BLE001 - no transport security
        security = []
    if "ssl" not in security:
        raise FailedPreconditionError(
            "TLS is required for calls from another host", reason=TLS_REQUIRED
        )


def _limiter_key(peer: str, authorization: str | None, identity: str | None) -> str:
    """Throttling is per peer and kind of credential: a flood of anonymous calls does not
    throttle a custodian's API key from the same address (and forged keys do not throttle
    certificate callers)."""
    kind = "bearer" if authorization else "cert" if identity else "none"
    return f"{peer}|{kind}"


def check_throttle(
    door: Authenticator, context: Context, authorization: str | None, identity: str | None
) -> None:
    """A throttled peer is answered RESOURCE_EXHAUSTED before any store work, unless its
    credential is one the vault already knows (an honest caller sharing its address)."""
    retry = door.limiter.retry_after(_limiter_key(_peer(context), authorization, identity))
    if retry is not None and not door.recognizes(authorization, identity):
        raise RefusalsThrottledError(retry)


async def refused(
    servicer: Authenticated,
    method: str,
    context: Context,
    caller: Caller | None,
    exc: VaultError,
    authorization: str | None,
) -> None:
    """Tally a refused credential, a missing permission or a throttled call into the
    audit trail (aggregated, see audit.refusals): the reason code and where the call came
    from, never the credential. Every refusal but a throttled one spends from the peer's
    refusal budget."""
    door = servicer.authenticator
    peer = _peer(context)
    # The connection's client certificate, if any: an identity is a name, not a secret.
    identity = cert_identity(context)
    if not isinstance(exc, RefusalsThrottledError):
        door.limiter.spend(_limiter_key(peer, authorization, identity))
    audit = servicer.audit
    if audit is None or exc.audited:
        return
    key = RefusalKey(
        peer,
        caller.name if caller is not None else "",
        caller.tenant if caller is not None else "",
        ACTION_AUTHORIZE if caller is not None else ACTION_AUTHENTICATE,
        exc.reason,
        method,
        untyped(identity)[:256] if identity and caller is None else "",
    )
    try:
        await door.refusals.refused(audit, key, request_context(context, strict=False).request_id)
    except Exception as audit_exc:  # noqa: BLE001 - the call is refused either way
        log.error("audit of a refused call failed: %s", type(audit_exc).__name__)
    else:
        exc.audited = True


REFUSALS = (UnauthenticatedError, PermissionDeniedError, RefusalsThrottledError)


def decode_request(decode: Decoder | None, request: Any) -> Any:
    """The request message: the raw bytes decoded now that the caller is authenticated."""
    if decode is not None and isinstance(request, bytes):
        request = decode(request)
    if request is MALFORMED:
        raise InvalidArgumentError(
            FieldViolation("", "the request is not a valid message"),
            reason="MALFORMED_REQUEST",
        )
    return request


def rpc(method: str) -> Callable[[Handler[Req, Resp]], Callable[..., Awaitable[Resp]]]:
    """Authenticate from the headers, then decode the body, run, map errors, count.
    ``method`` is the metric label."""
    latency = metrics.RPC_LATENCY.labels(method)
    ok = metrics.RPC_CALLS.labels(method, "OK")

    def decorate(fn: Handler[Req, Resp]) -> Callable[..., Awaitable[Resp]]:
        @functools.wraps(fn)
        async def handler(
            self: Authenticated, request: Any, context: Context, decode: Decoder | None = None
        ) -> Resp:
            start = time.perf_counter()
            caller: Caller | None = None
            authorization: str | None = None
            try:
                check_transport(context)
                door = self.authenticator
                authorization = authorization_of(context)
                identity = None if authorization else cert_identity(context)
                if door.limiter.throttling:
                    check_throttle(door, context, authorization, identity)
                caller = await door.authenticate(authorization, identity)
                if tracing.enabled():
                    tracing.annotate_call(caller)
                response = await fn(self, caller, decode_request(decode, request), context)
            except VaultError as exc:
                code = grpc_code(exc)
                if tracing.enabled():
                    tracing.annotate_code(code.value[0])
                metrics.RPC_CALLS.labels(method, code.name).inc()
                latency.observe(time.perf_counter() - start)
                if isinstance(exc, REFUSALS):
                    metrics.AUTH_FAILURES.labels(exc.reason).inc()
                    await refused(self, method, context, caller, exc, authorization)
                # abort_with_status is in grpc.aio but missing from grpc-stubs.
                await context.abort_with_status(to_grpc_status(exc))  # type: ignore[attr-defined]
                raise  # pragma: no cover - abort raises
            except Exception as exc:
                # Only the type is logged: an exception string may carry input.
                log.error("internal error in %s: %s", method, type(exc).__name__)
                if tracing.enabled():
                    tracing.annotate_code(grpc.StatusCode.INTERNAL.value[0])
                metrics.RPC_CALLS.labels(method, "INTERNAL").inc()
                latency.observe(time.perf_counter() - start)
                await context.abort(grpc.StatusCode.INTERNAL, "internal error")
                raise  # pragma: no cover - abort raises
            ok.inc()
            latency.observe(time.perf_counter() - start)
            return response

        return handler

    return decorate


def connection_options(config: Config) -> list[tuple[str, int]]:
    """grpc server channel arguments bounding connections (0 in the config = no limit).
    grpc.max_allowed_incoming_connections is enforced at accept, before the handshake."""
    options: list[tuple[str, int]] = []
    settings = (
        ("grpc.max_allowed_incoming_connections", config.max_connections, 1),
        ("grpc.max_connection_idle_ms", config.max_connection_idle, 1000),
        ("grpc.max_connection_age_ms", config.max_connection_age, 1000),
    )
    for name, value, scale in settings:
        if value > 0:
            options.append((name, max(int(value * scale), 1)))
    if config.max_connection_age > 0:
        grace = int(config.max_connection_age_grace * 1000)
        options.append(("grpc.max_connection_age_grace_ms", grace))
    return options


def _decoder(cls: type[Message]) -> Decoder:
    def decode(data: bytes) -> Any:
        try:
            return cls.FromString(data)
        except DecodeError:
            # grpc would answer UNKNOWN with protobuf's own text; the handler answers
            # INVALID_ARGUMENT with ErrorInfo instead, after authenticating the caller.
            return MALFORMED

    return decode


def add_service(server: grpc.aio.Server, service: ServiceDescriptor, servicer: object) -> None:
    """Register the methods of ``service`` on ``servicer`` (the generated helper's job;
    the bidirectional streams too, see api/streams.py). grpc hands each handler the raw
    request bytes (no request deserializer) and the handler decodes them with the
    method's tolerant decoder only once the credential in the headers is accepted: an
    anonymous client never gets a body parsed."""
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
    for method in service.methods:
        request_cls = message_factory.GetMessageClass(method.input_type)
        response_cls = message_factory.GetMessageClass(method.output_type)
        make = (
            grpc.stream_stream_rpc_method_handler
            if method.client_streaming
            else grpc.unary_unary_rpc_method_handler
        )
        handlers[method.name] = make(
            functools.partial(getattr(servicer, method.name), decode=_decoder(request_cls)),
            request_deserializer=None,
            response_serializer=response_cls.SerializeToString,
        )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )
    server.add_registered_method_handlers(service.full_name, handlers)  # type: ignore[attr-defined]
