"""vault.v1.ForwardService: proto in, the Forward use case, proto out (through ``rpc``:
authentication, error mapping, metrics)."""

from __future__ import annotations

from typing import Any

from vault.api.rpc import request_context, rpc
from vault.audit.base import AuditSink
from vault.auth.apikeys import Authenticator
from vault.auth.policy import Caller
from vault.clock import Clock
from vault.forward.usecase import Forward
from vault.v1 import forward_service_pb2 as pb
from vault.v1 import forward_service_pb2_grpc as pb_grpc

__all__ = ["FORWARD_SERVICE", "ForwardServicer"]

FORWARD_SERVICE = pb.DESCRIPTOR.services_by_name["ForwardService"]


class ForwardServicer(pb_grpc.ForwardServiceServicer):
    def __init__(
        self,
        forward: Forward,
        authenticator: Authenticator,
        audit: AuditSink | None,
        clock: Clock,
    ) -> None:
        self.forward = forward
        self.authenticator = authenticator
        self.audit = audit  # where refused credentials and permissions are recorded
        self.clock = clock

    @rpc("Forward")
    async def Forward(  # noqa: N802 - gRPC method name
        self, caller: Caller, request: pb.ForwardRequest, context: Any
    ) -> pb.ForwardResponse:
        result = await self.forward.forward(
            caller,
            request.route,
            dict(request.headers),
            request.body,
            request.purpose,
            request=request_context(context),
        )
        return pb.ForwardResponse(status=result.status, headers=result.headers, body=result.body)
