"""vault.v1.TokenService: proto in, use case, proto out.

Every handler goes through ``_rpc``: it authenticates the caller, maps vault errors to
rich statuses, and records the call's code and latency. That is the job of an
interceptor; it is a wrapper here because a grpc.aio interceptor costs an extra
coroutine and handler lookup on every call of the hot path.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

import grpc
from google.protobuf import timestamp_pb2

from vault import metrics
from vault.api.errors import grpc_code, to_grpc_status
from vault.auth.apikeys import Authenticator
from vault.auth.policy import Caller
from vault.domain.model import Address, DataKind, Value
from vault.domain.tokens import Revealed, Tokenized, TokenizeItem, TokenVault
from vault.errors import UnauthenticatedError, VaultError
from vault.v1 import token_service_pb2 as pb
from vault.v1 import token_service_pb2_grpc as pb_grpc
from vault.v1 import types_pb2

__all__ = ["TokenServicer"]

log = logging.getLogger(__name__)

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Handler = Callable[[Any, Caller, Req, grpc.aio.ServicerContext[Any, Any]], Awaitable[Resp]]


def _authorization(context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
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
        async def handler(
            self: TokenServicer, request: Req, context: grpc.aio.ServicerContext[Any, Any]
        ) -> Resp:
            start = time.perf_counter()
            try:
                caller = await self.authenticator.authenticate(_authorization(context))
                response = await fn(self, caller, request, context)
            except VaultError as exc:
                code = grpc_code(exc)
                metrics.RPC_CALLS.labels(method, code.name).inc()
                latency.observe(time.perf_counter() - start)
                if isinstance(exc, UnauthenticatedError):
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


# -- conversions ---------------------------------------------------------------------


def _item(req: pb.TokenizeRequest) -> TokenizeItem:
    which = req.WhichOneof("value")
    value: Value | None
    if which == "text":
        value = req.text
    elif which == "address":
        a = req.address
        value = Address(
            a.recipient,
            tuple(a.lines),
            a.locality,
            a.administrative_area,
            a.postal_code,
            a.region_code,
        )
    else:
        value = None
    ttl = req.ttl.seconds + req.ttl.nanos / 1e9 if req.HasField("ttl") else None
    return TokenizeItem(
        kind=req.kind,
        value=value,
        token_format=req.format,
        deterministic=req.deterministic,
        subject=req.subject,
        metadata=dict(req.metadata),
        ttl_seconds=ttl,
        request_id=req.request_id,
    )


def _timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def _tokenized(t: Tokenized) -> pb.TokenizeResponse:
    resp = pb.TokenizeResponse(
        token=t.token, fingerprint=t.fingerprint, masked=t.masked, created=t.created
    )
    if t.expires_at is not None:
        resp.expire_time.CopyFrom(_timestamp(t.expires_at))
    return resp


def _address(a: Address) -> types_pb2.Address:
    return types_pb2.Address(
        recipient=a.recipient,
        lines=a.lines,
        locality=a.locality,
        administrative_area=a.administrative_area,
        postal_code=a.postal_code,
        region_code=a.region_code,
    )


def _revealed(r: Revealed) -> pb.DetokenizeResponse:
    resp = pb.DetokenizeResponse(
        kind=cast("types_pb2.DataKind", int(r.kind)),
        metadata=r.metadata,
        subject=r.subject,
        token=r.token,
    )
    if isinstance(r.value, Address):
        resp.address.CopyFrom(_address(r.value))
    else:
        resp.text = r.value
    return resp


class TokenServicer(pb_grpc.TokenServiceServicer):
    def __init__(self, vault: TokenVault, authenticator: Authenticator) -> None:
        self.vault = vault
        self.authenticator = authenticator

    @rpc("Tokenize")
    async def Tokenize(  # noqa: N802 - gRPC method name
        self, caller: Caller, request: pb.TokenizeRequest, _context: Any
    ) -> pb.TokenizeResponse:
        (result,) = await self.vault.tokenize(caller, [_item(request)], batch=False)
        return _tokenized(result)

    @rpc("BatchTokenize")
    async def BatchTokenize(  # noqa: N802 - gRPC method name
        self, caller: Caller, request: pb.BatchTokenizeRequest, _context: Any
    ) -> pb.BatchTokenizeResponse:
        results = await self.vault.tokenize(
            caller, [_item(r) for r in request.requests], batch=True
        )
        return pb.BatchTokenizeResponse(responses=[_tokenized(t) for t in results])

    @rpc("Detokenize")
    async def Detokenize(  # noqa: N802 - gRPC method name
        self, caller: Caller, request: pb.DetokenizeRequest, _context: Any
    ) -> pb.DetokenizeResponse:
        (result,) = await self.vault.detokenize(
            caller, [request.token], request.purpose, batch=False
        )
        return _revealed(result)

    @rpc("BatchDetokenize")
    async def BatchDetokenize(  # noqa: N802 - gRPC method name
        self, caller: Caller, request: pb.BatchDetokenizeRequest, _context: Any
    ) -> pb.BatchDetokenizeResponse:
        results = await self.vault.detokenize(
            caller, list(request.tokens), request.purpose, batch=True
        )
        return pb.BatchDetokenizeResponse(responses=[_revealed(r) for r in results])

    @rpc("GetToken")
    async def GetToken(  # noqa: N802 - gRPC method name
        self, caller: Caller, request: pb.GetTokenRequest, _context: Any
    ) -> pb.GetTokenResponse:
        info = await self.vault.get_token(caller, request.token)
        resp = pb.GetTokenResponse(
            token=info.token,
            kind=cast("types_pb2.DataKind", int(info.kind)),
            format=cast("types_pb2.TokenFormat", int(info.token_format)),
            masked=info.masked,
            fingerprint=info.fingerprint,
            subject=info.subject,
            metadata=info.metadata,
            deterministic=info.deterministic,
            key_version=info.key_version,
        )
        resp.create_time.CopyFrom(_timestamp(info.created_at))
        if info.expires_at is not None:
            resp.expire_time.CopyFrom(_timestamp(info.expires_at))
        return resp

    @rpc("DeleteToken")
    async def DeleteToken(  # noqa: N802 - gRPC method name
        self, caller: Caller, request: pb.DeleteTokenRequest, _context: Any
    ) -> pb.DeleteTokenResponse:
        await self.vault.delete_token(caller, request.token)
        return pb.DeleteTokenResponse()


# Kinds in the proto and the domain share numbers; checked once at import.
assert {k.value for k in DataKind} == set(types_pb2.DataKind.values())  # noqa: S101
