"""What every vault RPC handler shares: authentication, error mapping, metrics, and
registration with a request decoder that turns undecodable bytes into INVALID_ARGUMENT.

``rpc`` does the job of an interceptor. It is a wrapper because a grpc.aio interceptor
adds a coroutine and a handler lookup to every call on the hot path.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError, Message

from vault import metrics
from vault.api.errors import grpc_code, to_grpc_status
from vault.auth.apikeys import Authenticator
from vault.auth.policy import Caller
from vault.errors import (
    FieldViolation,
    InvalidArgumentError,
    PermissionDeniedError,
    UnauthenticatedError,
    VaultError,
)

__all__ = ["MALFORMED", "Authenticated", "add_service", "rpc"]

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


Handler = Callable[[Any, Caller, Req, Context], Awaitable[Resp]]


def _authorization(context: Context) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            return value if isinstance(value, str) else None
    return None


def rpc(method: str) -> Callable[[Handler[Req, Resp]], Callable[..., Awaitable[Resp]]]:
    """Authenticate, run, map errors, count. ``method`` is the metric label."""
    latency = metrics.RPC_LATENCY.labels(method)
    ok = metrics.RPC_CALLS.labels(method, "OK")

    def decorate(fn: Handler[Req, Resp]) -> Callable[..., Awaitable[Resp]]:
        @functools.wraps(fn)
        async def handler(self: Authenticated, request: Req, context: Context) -> Resp:
            start = time.perf_counter()
            try:
                caller = await self.authenticator.authenticate(_authorization(context))
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
