"""vault.v1.TokenService: proto in, use case, proto out (every handler goes through
``rpc``: authentication, error mapping, metrics)."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, cast

from google.protobuf import timestamp_pb2

from vault.api.rpc import request_context, rpc
from vault.api.streams import stream
from vault.audit.base import AuditSink
from vault.auth.apikeys import Authenticator
from vault.auth.policy import SCOPE_DETOKENIZE, SCOPE_TOKENIZE, Caller
from vault.clock import Clock
from vault.domain.model import Address, DataKind, RequestContext, Value
from vault.domain.results import Revealed, Tokenized
from vault.domain.usecases import UseCases
from vault.domain.validation import TokenizeItem
from vault.v1 import token_service_pb2 as pb
from vault.v1 import token_service_pb2_grpc as pb_grpc
from vault.v1 import types_pb2

__all__ = ["TOKEN_SERVICE", "TokenServicer", "address_message", "timestamp"]

TOKEN_SERVICE = pb.DESCRIPTOR.services_by_name["TokenService"]

# -- conversions ---------------------------------------------------------------------


_NO_METADATA: Mapping[str, str] = MappingProxyType({})


def _value(req: pb.TokenizeRequest | pb.UpdateTokenRequest) -> Value | None:
    which = req.WhichOneof("value")
    if which == "text":
        return req.text
    if which == "address":
        a = req.address
        return Address(
            a.recipient,
            tuple(a.lines),
            a.locality,
            a.administrative_area,
            a.postal_code,
            a.region_code,
        )
    return None


def _item(req: pb.TokenizeRequest) -> TokenizeItem:
    value = _value(req)
    ttl = req.ttl.seconds + req.ttl.nanos / 1e9 if req.HasField("ttl") else None
    # Positional and without copying an empty map: this runs once per batch item.
    return TokenizeItem(
        req.kind,
        value,
        req.format,
        req.deterministic,
        req.subject,
        dict(req.metadata) if len(req.metadata) else _NO_METADATA,
        ttl,
        req.request_id,
    )


def timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def _tokenized(t: Tokenized) -> pb.TokenizeResponse:
    resp = pb.TokenizeResponse(token=t.token, fingerprint=t.fingerprint, masked=t.masked)
    if t.created:
        resp.created = True
    if t.expires_at is not None:
        resp.expire_time.CopyFrom(timestamp(t.expires_at))
    return resp


def address_message(a: Address) -> types_pb2.Address:
    return types_pb2.Address(
        recipient=a.recipient,
        lines=a.lines,
        locality=a.locality,
        administrative_area=a.administrative_area,
        postal_code=a.postal_code,
        region_code=a.region_code,
    )


def _revealed(r: Revealed) -> pb.DetokenizeResponse:
    value = r.value
    kind = cast("types_pb2.DataKind", int(r.kind))
    # Only set what is there: an empty map or string still costs a field copy.
    if isinstance(value, str) and not r.metadata and not r.subject:
        return pb.DetokenizeResponse(kind=kind, text=value, token=r.token)
    resp = pb.DetokenizeResponse(kind=kind, subject=r.subject, token=r.token)
    if r.metadata:
        resp.metadata.update(r.metadata)
    if isinstance(value, Address):
        resp.address.CopyFrom(address_message(value))
    else:
        resp.text = value
    return resp


class TokenServicer(pb_grpc.TokenServiceServicer):
    def __init__(
        self,
        use_cases: UseCases,
        authenticator: Authenticator,
        audit: AuditSink | None,
        clock: Clock,
    ) -> None:
        self.use_cases = use_cases
        self.authenticator = authenticator
        self.audit = audit  # where refused credentials and permissions are recorded
        self.clock = clock

    @rpc("Tokenize")
    async def Tokenize(  # noqa: N802 - gRPC method name
        self, caller: Caller, request: pb.TokenizeRequest, _context: Any
    ) -> pb.TokenizeResponse:
        (result,) = await self.use_cases.tokenize.tokenize(caller, [_item(request)], batch=False)
        return _tokenized(result)

    @rpc("BatchTokenize")
    async def BatchTokenize(  # noqa: N802 - gRPC method name
        self, caller: Caller, request: pb.BatchTokenizeRequest, _context: Any
    ) -> pb.BatchTokenizeResponse:
        results = await self.use_cases.tokenize.tokenize(
            caller, [_item(r) for r in request.requests], batch=True
        )
        return pb.BatchTokenizeResponse(responses=[_tokenized(t) for t in results])

    @rpc("Detokenize")
    async def Detokenize(  # noqa: N802 - gRPC method name
        self, caller: Caller, request: pb.DetokenizeRequest, context: Any
    ) -> pb.DetokenizeResponse:
        (result,) = await self.use_cases.reveal.detokenize(
            caller,
            [request.token],
            request.purpose,
            batch=False,
            request=request_context(context),
        )
        return _revealed(result)

    @rpc("BatchDetokenize")
    async def BatchDetokenize(  # noqa: N802 - gRPC method name
        self, caller: Caller, request: pb.BatchDetokenizeRequest, context: Any
    ) -> pb.BatchDetokenizeResponse:
        results = await self.use_cases.reveal.detokenize(
            caller,
            list(request.tokens),
            request.purpose,
            batch=True,
            request=request_context(context),
        )
        return pb.BatchDetokenizeResponse(responses=[_revealed(r) for r in results])

    @rpc("GetToken")
    async def GetToken(  # noqa: N802 - gRPC method name
        self, caller: Caller, request: pb.GetTokenRequest, _context: Any
    ) -> pb.GetTokenResponse:
        info = await self.use_cases.describe.get_token(caller, request.token)
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
        resp.create_time.CopyFrom(timestamp(info.created_at))
        if info.expires_at is not None:
            resp.expire_time.CopyFrom(timestamp(info.expires_at))
        return resp

    @rpc("DeleteToken")
    async def DeleteToken(  # noqa: N802 - gRPC method name
        self, caller: Caller, request: pb.DeleteTokenRequest, context: Any
    ) -> pb.DeleteTokenResponse:
        await self.use_cases.describe.delete_token(
            caller, request.token, request=request_context(context)
        )
        return pb.DeleteTokenResponse()

    @rpc("UpdateToken")
    async def UpdateToken(  # noqa: N802 - gRPC method name
        self, caller: Caller, request: pb.UpdateTokenRequest, context: Any
    ) -> pb.UpdateTokenResponse:
        result = await self.use_cases.corrections.update_token(
            caller,
            request.token,
            _value(request),
            dict(request.metadata) if request.replace_metadata else None,
            request=request_context(context),
        )
        return pb.UpdateTokenResponse(
            token=result.token, fingerprint=result.fingerprint, masked=result.masked
        )

    # -- streams: each item is the unary call (same use case, audit, limits), see
    # api/streams.py for the window, the order and the per-item errors.

    async def _tokenize_group(
        self, caller: Caller, requests: list[pb.TokenizeRequest], _request: RequestContext
    ) -> list[pb.TokenizeResponse]:
        """The stream's items that arrived together, as one batch (one commit)."""
        results = await self.use_cases.tokenize.tokenize(
            caller, [_item(r) for r in requests], batch=True
        )
        return [_tokenized(t) for t in results]

    @stream("TokenizeStream", SCOPE_TOKENIZE, pb.TokenizeStreamResponse, _tokenize_group)
    async def TokenizeStream(  # noqa: N802 - gRPC method name
        self, caller: Caller, request: pb.TokenizeRequest, _request: RequestContext
    ) -> pb.TokenizeResponse:
        (result,) = await self.use_cases.tokenize.tokenize(caller, [_item(request)], batch=False)
        return _tokenized(result)

    @stream("DetokenizeStream", SCOPE_DETOKENIZE, pb.DetokenizeStreamResponse)
    async def DetokenizeStream(  # noqa: N802 - gRPC method name
        self, caller: Caller, request: pb.DetokenizeStreamRequest, context: RequestContext
    ) -> pb.DetokenizeResponse:
        (result,) = await self.use_cases.reveal.detokenize(
            caller, [request.token], request.purpose, batch=False, request=context
        )
        return _revealed(result)


# Kinds in the proto and the domain share numbers; checked once at import.
assert {k.value for k in DataKind} == set(types_pb2.DataKind.values())  # noqa: S101
