"""vault.v1.SubjectService: data-subject requests (export, erasure, legal hold)."""

from __future__ import annotations

from typing import Any, cast

from vault.api.rpc import request_context, rpc
from vault.api.token_service import address_message, timestamp
from vault.audit.base import AuditSink
from vault.auth.apikeys import Authenticator
from vault.auth.policy import Caller
from vault.clock import Clock
from vault.domain.model import Address
from vault.domain.subjects import ExportedRecord, SubjectRequests
from vault.v1 import subject_service_pb2 as pb
from vault.v1 import subject_service_pb2_grpc as pb_grpc
from vault.v1 import types_pb2

__all__ = ["SUBJECT_SERVICE", "SubjectServicer"]

SUBJECT_SERVICE = pb.DESCRIPTOR.services_by_name["SubjectService"]


def _record(r: ExportedRecord) -> pb.SubjectRecord:
    msg = pb.SubjectRecord(
        token=r.token,
        kind=cast("types_pb2.DataKind", int(r.kind)),
        metadata=r.metadata,
        create_time=timestamp(r.created_at),
    )
    if isinstance(r.value, Address):
        msg.address.CopyFrom(address_message(r.value))
    else:
        msg.text = r.value
    if r.expires_at is not None:
        msg.expire_time.CopyFrom(timestamp(r.expires_at))
    return msg


class SubjectServicer(pb_grpc.SubjectServiceServicer):
    def __init__(
        self,
        subjects: SubjectRequests,
        authenticator: Authenticator,
        audit: AuditSink | None,
        clock: Clock,
    ) -> None:
        self.subjects = subjects
        self.authenticator = authenticator
        self.audit = audit  # where refused credentials and permissions are recorded
        self.clock = clock

    @rpc("ExportSubject")
    async def ExportSubject(  # noqa: N802 - gRPC method name
        self, caller: Caller, request: pb.ExportSubjectRequest, context: Any
    ) -> pb.ExportSubjectResponse:
        export = await self.subjects.export(
            caller, request.subject, purpose=request.purpose, request=request_context(context)
        )
        return pb.ExportSubjectResponse(
            records=[_record(r) for r in export.records],
            reveals=[
                pb.SubjectReveal(
                    time=timestamp(v.time),
                    caller=v.caller,
                    purpose=v.purpose,
                    token=v.token,
                    request_id=v.request_id,
                )
                for v in export.reveals
            ],
            held=export.held,
        )

    @rpc("EraseSubject")
    async def EraseSubject(  # noqa: N802 - gRPC method name
        self, caller: Caller, request: pb.EraseSubjectRequest, context: Any
    ) -> pb.EraseSubjectResponse:
        erased = await self.subjects.erase(
            caller, request.subject, request.reason, request=request_context(context)
        )
        return pb.EraseSubjectResponse(erased_count=erased)

    @rpc("SetLegalHold")
    async def SetLegalHold(  # noqa: N802 - gRPC method name
        self, caller: Caller, request: pb.SetLegalHoldRequest, context: Any
    ) -> pb.SetLegalHoldResponse:
        changed = await self.subjects.set_legal_hold(
            caller,
            request.subject,
            hold=request.hold,
            reason=request.reason,
            request=request_context(context),
        )
        return pb.SetLegalHoldResponse(held=request.hold, changed=changed)
