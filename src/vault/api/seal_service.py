"""vault.v1.SealService, and the gate TokenService answers through while sealed.

A vault whose master key is split (kek_provider = shares) starts sealed: health "" is
SERVING, "vault.v1.TokenService" NOT_SERVING, every TokenService call UNAVAILABLE with
reason VAULT_SEALED. Custodians submit shares with SubmitUnsealShare, each with a
credential that has the ``keys`` scope (dual control: a share alone, or a credential
alone, unseals nothing). Callers are rows of the store, readable without the master key.

The audit trail needs the master key, so while sealed each submission (caller, outcome,
share index: never the share) and each refused credential is kept in memory and
recorded once the vault unseals.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from vault import metrics
from vault.api.errors import to_grpc_status
from vault.api.rpc import Decoder, request_context, rpc
from vault.audit.base import OUTCOME_DENIED, OUTCOME_ERROR, OUTCOME_OK, AuditEvent, AuditSink
from vault.auth.apikeys import Authenticator
from vault.auth.policy import SCOPE_KEYS, Caller, require
from vault.clock import Clock
from vault.crypto.base import KekProvider
from vault.crypto.shares import parse_share
from vault.domain.unseal import Unsealer
from vault.errors import UnavailableError, VaultError
from vault.v1 import seal_service_pb2 as pb
from vault.v1 import seal_service_pb2_grpc as pb_grpc

__all__ = [
    "ACTION_UNSEAL",
    "ACTION_UNSEAL_SHARE",
    "SEAL_SERVICE",
    "PendingAudit",
    "SealServicer",
    "SealedGate",
]

log = logging.getLogger(__name__)

SEAL_SERVICE = pb.DESCRIPTOR.services_by_name["SealService"]
ACTION_UNSEAL_SHARE = "key.unseal_share"  # one SubmitUnsealShare (never the share)
ACTION_UNSEAL = "key.unseal"  # the vault unsealed (the K-th share)
# Events remembered while sealed. Unseal submissions have a budget of their own (only
# keys-scope callers get that far, so it bounds a runaway script, not an attack); every
# other event, refusals above all, shares the second one.
_MAX_PENDING_UNSEAL = 10_000
_MAX_PENDING_OTHER = 1000

# What the last share hands the server: load the keys under the rebuilt master key and
# serve; returns the audit trail it opened. Raises (and loads nothing) if the data keys
# do not unwrap.
UnsealHook = Callable[[KekProvider], Awaitable[AuditSink]]

_UNSEAL_ACTIONS = frozenset({ACTION_UNSEAL_SHARE, ACTION_UNSEAL})

_SEALED = UnavailableError("the vault is sealed", reason="VAULT_SEALED")


class SealedGate:
    """TokenService's registered servicer while sealed: UNAVAILABLE / VAULT_SEALED for
    every method until ``open`` hands it the real servicer."""

    def __init__(self) -> None:
        self._servicer: object | None = None

    def __repr__(self) -> str:
        return f"SealedGate(open={self._servicer is not None})"

    def open(self, servicer: object) -> None:
        self._servicer = servicer

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        if name.startswith("_"):
            raise AttributeError(name)

        async def handler(request: Any, context: Any, decode: Decoder | None = None) -> Any:
            # Sealed, nothing is decoded or looked up: the request stays bytes.
            servicer = self._servicer
            if servicer is None:
                await context.abort_with_status(to_grpc_status(_SEALED))
            return await getattr(servicer, name)(request, context, decode=decode)

        return handler


class PendingAudit:
    """The AuditSink while sealed: keeps events (refused credentials too, tallied by
    ``rpc``) until the trail can be written, then writes them first, in order.

    Two budgets, so anonymous traffic cannot take the room of a custodian: the unseal
    events (``key.unseal_share``, ``key.unseal``; each needs a keys-scope credential) have
    their own, and every other event (refusals, already aggregated per peer and window)
    shares the rest. An event past its budget is dropped, counted in
    ``vault_audit_events_dropped_total`` and logged (one line, no values).
    """

    def __init__(
        self,
        max_unseal_events: int = _MAX_PENDING_UNSEAL,
        max_other_events: int = _MAX_PENDING_OTHER,
    ) -> None:
        self._trail: AuditSink | None = None
        self._events: list[AuditEvent] = []
        self._room = {True: max_unseal_events, False: max_other_events}

    def __repr__(self) -> str:
        return f"PendingAudit(kept={len(self._events)})"

    def attach(self, trail: AuditSink) -> None:
        self._trail = trail

    async def record(self, events: Sequence[AuditEvent]) -> None:
        if self._trail is None:
            self._keep(events)
            return
        kept, self._events = self._events, []
        await self._trail.record([*kept, *events])

    def _keep(self, events: Sequence[AuditEvent]) -> None:
        dropped: dict[str, int] = {}
        for event in events:
            unseal = event.action in _UNSEAL_ACTIONS
            if self._room[unseal] > 0:
                self._room[unseal] -= 1
                self._events.append(event)
            else:
                dropped[event.action] = dropped.get(event.action, 0) + 1
        for action, count in dropped.items():
            metrics.AUDIT_EVENTS_DROPPED.labels(action).inc(count)
            log.warning("audit buffer full while sealed: %d %s event(s) dropped", count, action)


class SealServicer(pb_grpc.SealServiceServicer):
    def __init__(
        self,
        authenticator: Authenticator,
        clock: Clock,
        unsealer: Unsealer,
        on_unseal: UnsealHook,
        audit: AuditSink | None,
    ) -> None:
        self.authenticator = authenticator
        self.clock = clock
        # The trail; while sealed (no master key, so no audit key) a PendingAudit.
        self._pending = PendingAudit()
        self.audit: AuditSink = audit if audit is not None else self._pending
        self._unsealer = unsealer
        self._on_unseal = on_unseal
        self._lock = asyncio.Lock()
        metrics.SEALED.set(1 if unsealer.progress().sealed else 0)

    def __repr__(self) -> str:
        return f"SealServicer({self._unsealer!r})"

    @rpc("GetSealStatus")
    async def GetSealStatus(  # noqa: N802 - gRPC method name
        self, _caller: Caller, _request: pb.GetSealStatusRequest, _context: Any
    ) -> pb.GetSealStatusResponse:
        p = self._unsealer.progress()
        return pb.GetSealStatusResponse(
            sealed=p.sealed,
            threshold=p.threshold,
            shares_submitted=p.submitted,
            share_count=p.share_count,
        )

    @rpc("SubmitUnsealShare")
    async def SubmitUnsealShare(  # noqa: N802 - gRPC method name
        self, caller: Caller, request: pb.SubmitUnsealShareRequest, context: Any
    ) -> pb.SubmitUnsealShareResponse:
        ctx = request_context(context)
        detail: dict[str, str] = {}

        async def audit(outcome: str, reason: str = "") -> None:
            p = self._unsealer.progress()
            detail.update(submitted=str(p.submitted), threshold=str(p.threshold))
            event = AuditEvent(
                self.clock.now(),
                caller.name,
                caller.tenant,
                ACTION_UNSEAL_SHARE,
                outcome=outcome,
                reason=reason,
                request_id=ctx.request_id,
                peer=ctx.peer,
                detail=dict(detail),
            )
            await self._record([event])

        async with self._lock:
            try:
                require(caller, SCOPE_KEYS)
                share = parse_share(request.share)
                detail["index"] = str(share.index)
                kek = self._unsealer.submit(share)
                if kek is not None:
                    await self._finish(kek, caller, ctx.request_id, ctx.peer, audit)
            except VaultError as exc:
                outcome = OUTCOME_DENIED if exc.reason == "MISSING_SCOPE" else OUTCOME_ERROR
                await audit(outcome, exc.reason)
                exc.audited = True
                raise
            if kek is None:
                await audit(OUTCOME_OK)
            p = self._unsealer.progress()
            return pb.SubmitUnsealShareResponse(
                sealed=p.sealed,
                threshold=p.threshold,
                shares_submitted=p.threshold if not p.sealed else p.submitted,
            )

    async def _finish(
        self,
        kek: KekProvider,
        caller: Caller,
        request_id: str,
        peer: str,
        audit: Callable[[str, str], Awaitable[None]],
    ) -> None:
        """The K-th share: prove the key on the data keys and serve, or start over."""
        threshold = self._unsealer.progress().threshold
        try:
            trail = await self._on_unseal(kek)
        except VaultError as exc:
            self._unsealer.reset()
            log.warning("unseal failed: %s", exc.reason)
            raise UnavailableError(
                "the shares rebuilt a key that does not unwrap the data keys; "
                "unsealing starts over",
                reason="UNSEAL_FAILED",
            ) from None
        self._pending.attach(trail)
        await audit(OUTCOME_OK, "")
        self._unsealer.mark_unsealed()
        metrics.SEALED.set(0)
        await self._record(
            [
                AuditEvent(
                    self.clock.now(),
                    caller.name,
                    caller.tenant,
                    ACTION_UNSEAL,
                    request_id=request_id,
                    peer=peer,
                    detail={"threshold": str(threshold), "kek": kek.kek_id},
                )
            ]
        )

    async def _record(self, events: list[AuditEvent]) -> None:
        """Into the trail (or kept until the vault unseals)."""
        try:
            await self.audit.record(events)
        except Exception as exc:  # noqa: BLE001 - the submission's outcome stands
            log.error("audit of unseal submissions failed: %s", type(exc).__name__)
