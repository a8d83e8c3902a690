"""vault.v1.KeyService: the data-key lifecycle over gRPC, through the same audited use
case as ``vaultctl keys`` (domain.keyops). Only callers with the ``keys`` scope; the
scope is checked before anything else (a refusal is audited by ``rpc``)."""

from __future__ import annotations

import math
from typing import Any

from google.protobuf import timestamp_pb2

from vault.api.rpc import request_context, rpc
from vault.audit.base import AuditSink
from vault.auth.apikeys import Authenticator
from vault.auth.policy import SCOPE_KEYS, Caller, require
from vault.clock import Clock
from vault.domain import rotation
from vault.domain.keyops import Actor, KeyOperations
from vault.errors import FieldViolation, InternalError, InvalidArgumentError
from vault.storage.base import RewrapProgressRow
from vault.v1 import key_service_pb2 as pb
from vault.v1 import key_service_pb2_grpc as pb_grpc

__all__ = ["KEY_SERVICE", "MAX_REWRAP_BATCH", "KeyServicer"]

KEY_SERVICE = pb.DESCRIPTOR.services_by_name["KeyService"]
# Most records per rewrap batch: one store transaction each, which holds the writer.
MAX_REWRAP_BATCH = 10_000

_STATES = {
    "primary": pb.KEY_STATE_PRIMARY,
    "active": pb.KEY_STATE_ACTIVE,
    "retired": pb.KEY_STATE_RETIRED,
}
_REWRAP_STATES = {
    rotation.REWRAP_RUNNING: pb.REWRAP_STATE_RUNNING,
    rotation.REWRAP_FINISHED: pb.REWRAP_STATE_FINISHED,
    rotation.REWRAP_INTERRUPTED: pb.REWRAP_STATE_INTERRUPTED,
}


def _timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def _version(v: rotation.KeyVersionStatus) -> pb.KeyVersion:
    return pb.KeyVersion(
        version=v.version,
        state=_STATES.get(v.state, pb.KEY_STATE_UNSPECIFIED),
        create_time=_timestamp(v.created_at),
        encryptions=v.encryptions,
        records=v.records,
        kek_id=v.kek_id,
    )


def _job(state: str, p: RewrapProgressRow) -> pb.RewrapJob:
    job = pb.RewrapJob(
        state=_REWRAP_STATES[state],
        primary_version=p.primary_version,
        start_time=_timestamp(p.started_at),
        last_progress_time=_timestamp(p.last_batch_at),
        batches=p.batches,
        rewrapped_records=p.rewrapped,
        skipped_records=p.skipped,
        failed_records=p.failed,
        remaining_records=p.remaining,
        batch_size=p.batch_size,
        rate=p.rate,
        holder=p.holder,
    )
    if p.finished_at is not None:
        job.finish_time.CopyFrom(_timestamp(p.finished_at))
    return job


def _actor(caller: Caller, context: Any) -> Actor:
    return Actor(caller.name, caller.tenant, request_context(context))


class KeyServicer(pb_grpc.KeyServiceServicer):
    """``settle_seconds``: a rewrap started within this long of a rotation first waits
    out the rest, so every server writes under the new primary before rows are moved."""

    def __init__(
        self,
        keys: KeyOperations,
        authenticator: Authenticator,
        audit: AuditSink | None,
        clock: Clock,
        *,
        settle_seconds: float,
    ) -> None:
        self.keys = keys
        self.authenticator = authenticator
        self.audit = audit  # where refused credentials and permissions are recorded
        self.clock = clock
        self.settle_seconds = settle_seconds

    async def _status_of(self, version: int) -> pb.KeyVersion:
        for v in await self.keys.versions():
            if v.version == version:
                return _version(v)
        raise InternalError("a key version changed meanwhile")  # pragma: no cover

    @rpc("GetKeyStatus")
    async def GetKeyStatus(  # noqa: N802 - gRPC method name
        self, caller: Caller, _request: pb.GetKeyStatusRequest, context: Any
    ) -> pb.GetKeyStatusResponse:
        require(caller, SCOPE_KEYS)
        status = await self.keys.status(_actor(caller, context))
        resp = pb.GetKeyStatusResponse(versions=[_version(v) for v in status.versions])
        if status.rewrap is not None:
            resp.rewrap.CopyFrom(_job(status.rewrap.state, status.rewrap.progress))
        return resp

    @rpc("RotateKey")
    async def RotateKey(  # noqa: N802 - gRPC method name
        self, caller: Caller, _request: pb.RotateKeyRequest, context: Any
    ) -> pb.RotateKeyResponse:
        require(caller, SCOPE_KEYS)
        old, new = await self.keys.rotate(_actor(caller, context))
        return pb.RotateKeyResponse(
            previous_primary_version=old, primary=await self._status_of(new)
        )

    @rpc("RewrapKeys")
    async def RewrapKeys(  # noqa: N802 - gRPC method name
        self, caller: Caller, request: pb.RewrapKeysRequest, context: Any
    ) -> pb.RewrapKeysResponse:
        require(caller, SCOPE_KEYS)
        violations = []
        if request.batch_size > MAX_REWRAP_BATCH:
            violations.append(FieldViolation("batch_size", f"must be at most {MAX_REWRAP_BATCH}"))
        if not math.isfinite(request.rate) or request.rate < 0:
            violations.append(FieldViolation("rate", "must be 0 (no limit) or more"))
        if violations:
            raise InvalidArgumentError(violations)
        started = await self.keys.rewrap_in_background(
            _actor(caller, context),
            batch=request.batch_size or rotation.DEFAULT_BATCH,
            rate=request.rate,
            settle_seconds=self.settle_seconds,
        )
        return pb.RewrapKeysResponse(job=_job(rotation.REWRAP_RUNNING, started))

    @rpc("RetireKeyVersion")
    async def RetireKeyVersion(  # noqa: N802 - gRPC method name
        self, caller: Caller, request: pb.RetireKeyVersionRequest, context: Any
    ) -> pb.RetireKeyVersionResponse:
        require(caller, SCOPE_KEYS)
        if request.version < 1:
            raise InvalidArgumentError(FieldViolation("version", "must be 1 or more"))
        await self.keys.retire(_actor(caller, context), request.version)
        return pb.RetireKeyVersionResponse(key_version=await self._status_of(request.version))
