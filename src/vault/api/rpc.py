"""What every vault RPC handler shares: authentication, error mapping, metrics, and
registration with a request decoder that turns undecodable bytes into INVALID_ARGUMENT.

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

from vault import metrics
from vault.api.errors import grpc_code, to_grpc_status
from vault.audit.base import (
    ACTION_AUTHENTICATE,
    ACTION_AUTHORIZE,
    OUTCOME_DENIED,
    AuditEvent,
    AuditSink,
)
from vault.auth.apikeys import Authenticator
from vault.auth.mtls import certificate_identity
from vault.auth.policy import Caller
from vault.clock import Clock
from vault.domain.model import RequestContext
from vault.errors import (
    FieldViolation,
    InvalidArgumentError,
    PermissionDeniedError,
    UnauthenticatedError,
    VaultError,
)

__all__ = ["MALFORMED", "Authenticated", "add_service", "cert_identity", "request_context", "rpc"]

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


def _authorization(context: Context) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            return value if isinstance(value, str) else None
    return None


def _texts(values: Any) -> list[str]:
    return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in values]


def cert_identity(context: Context) -> str | None:
    """The caller identity of the call's verified client certificate (see auth.mtls), or
    None on a plaintext or server-only-TLS connection.

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
    return certificate_identity(uris, _texts(auth.get("x509_common_name", ())))


# A client's x-request-id is kept when it is short printable ASCII; otherwise (or when
# absent) the vault makes one up, so every audited call has an id.
_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,128}")


def request_context(context: Context) -> RequestContext:
    """The call's request id and peer, for the audit trail."""
    request_id = ""
    for key, value in context.invocation_metadata() or ():
        if key == "x-request-id" and isinstance(value, str) and _REQUEST_ID.fullmatch(value):
            request_id = value
            break
    try:
        peer = context.peer() or ""
    except Exception:  # noqa: BLE001 - a peer the transport cannot name is not fatal
        peer = ""
    return RequestContext(request_id or str(uuid.uuid4()), peer)


async def _audit_refusal(
    servicer: Authenticated, method: str, context: Context, caller: Caller | None, exc: VaultError
) -> None:
    """Record a refused credential or a missing permission: the reason code and where the
    call came from, never the credential."""
    audit = servicer.audit
    if audit is None or exc.audited:
        return
    ctx = request_context(context)
    detail = {"method": method}
    # The connection's client certificate, if any: an identity is a name, not a secret.
    identity = cert_identity(context) if caller is None else None
    if identity:
        detail["cert_identity"] = identity[:256]
    event = AuditEvent(
        servicer.clock.now(),
        caller.name if caller is not None else "",
        caller.tenant if caller is not None else "",
        ACTION_AUTHORIZE if caller is not None else ACTION_AUTHENTICATE,
        outcome=OUTCOME_DENIED,
        reason=exc.reason,
        request_id=ctx.request_id,
        peer=ctx.peer,
        detail=detail,
    )
    try:
        await audit.record([event])
    except Exception as audit_exc:  # noqa: BLE001 - the call is refused either way
        log.error("audit of a refused call failed: %s", type(audit_exc).__name__)
    else:
        exc.audited = True


def rpc(method: str) -> Callable[[Handler[Req, Resp]], Callable[..., Awaitable[Resp]]]:
    """Authenticate, run, map errors, count. ``method`` is the metric label."""
    latency = metrics.RPC_LATENCY.labels(method)
    ok = metrics.RPC_CALLS.labels(method, "OK")

    def decorate(fn: Handler[Req, Resp]) -> Callable[..., Awaitable[Resp]]:
        @functools.wraps(fn)
        async def handler(self: Authenticated, request: Req, context: Context) -> Resp:
            start = time.perf_counter()
            caller: Caller | None = None
            try:
                authorization = _authorization(context)
                caller = await self.authenticator.authenticate(
                    authorization, None if authorization else cert_identity(context)
                )
                if request is MALFORMED:
                    raise InvalidArgumentError(  # noqa: TRY301 - mapped below like any other
                        FieldViolation("", "the request is not a valid message"),
                        reason="MALFORMED_REQUEST",
                    )
                response = await fn(self, caller, request, context)
            except VaultError as exc:
                code = grpc_code(exc)
                metrics.RPC_CALLS.labels(method, code.name).inc()
                latency.observe(time.perf_counter() - start)
                if isinstance(exc, UnauthenticatedError | PermissionDeniedError):
                    metrics.AUTH_FAILURES.labels(exc.reason).inc()
                    await _audit_refusal(self, method, context, caller, exc)
                # abort_with_status is in grpc.aio but missing from grpc-stubs.
                await context.abort_with_status(to_grpc_status(exc))  # type: ignore[attr-defined]
                raise  # pragma: no cover - abort raises
            except Exception as exc:
                # Only the type is logged: an exception string may carry input.
                log.error("internal error in %s: %s", method, type(exc).__name__)
                metrics.RPC_CALLS.labels(method, "INTERNAL").inc()
                latency.observe(time.perf_counter() - start)
                await context.abort(grpc.StatusCode.INTERNAL, "internal error")
                raise  # pragma: no cover - abort raises
            ok.inc()
            latency.observe(time.perf_counter() - start)
            return response

        return handler

    return decorate


def _decoder(cls: type[Message]) -> Callable[[bytes], Any]:
    def decode(data: bytes) -> Any:
        try:
            return cls.FromString(data)
        except DecodeError:
            # grpc would answer UNKNOWN with protobuf's own text; the handler answers
            # INVALID_ARGUMENT with ErrorInfo instead, after authenticating the caller.
            return MALFORMED

    return decode


def add_service(server: grpc.aio.Server, service: ServiceDescriptor, servicer: object) -> None:
    """Register the unary methods of ``service`` on ``servicer`` (the generated helper's
    job, with the tolerant decoder)."""
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
    for method in service.methods:
        request_cls = message_factory.GetMessageClass(method.input_type)
        response_cls = message_factory.GetMessageClass(method.output_type)
        handlers[method.name] = grpc.unary_unary_rpc_method_handler(
            getattr(servicer, method.name),
            request_deserializer=_decoder(request_cls),
            response_serializer=response_cls.SerializeToString,
        )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )
    server.add_registered_method_handlers(service.full_name, handlers)  # type: ignore[attr-defined]
