"""The audit records of the token use cases: one for a refused or failed call (best
effort), and those of a completed call, which must be durable or the call fails."""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Mapping, Sequence

from vault.audit.base import (
    ACTION_REVEAL,
    OUTCOME_DENIED,
    OUTCOME_ERROR,
    OUTCOME_OK,
    AuditEvent,
    AuditSink,
)
from vault.auth.policy import Caller
from vault.clock import Clock
from vault.domain.model import DataKind, RequestContext
from vault.domain.validation import Limits, recordable
from vault.errors import (
    NotFoundError,
    PermissionDeniedError,
    UnauthenticatedError,
    UnavailableError,
    VaultError,
)

__all__ = ["NO_CONTEXT", "UseCaseAudit", "reveal_detail", "reveal_event"]

NO_CONTEXT = RequestContext()
# What a refused call's record names instead of a string that is not a random-format
# token: a caller who sends a card number where a token belongs must not put it in the
# trail (PAN-shaped tokens are digits too, so they are left out of refusals as well).
_RANDOM_TOKEN = re.compile(r"tok_[a-z2-7]{32}")
_NOT_RECORDED = "[not recorded]"
_DENIED = (PermissionDeniedError, UnauthenticatedError, NotFoundError)

log = logging.getLogger(__name__)


class UseCaseAudit:
    """Writes the use cases' audit records. ``sink`` is None only where nothing is served
    (the in-process benchmark); the composition root always passes the trail."""

    def __init__(self, sink: AuditSink | None, clock: Clock, limits: Limits) -> None:
        self._sink = sink
        self._clock = clock
        self._limits = limits

    def __repr__(self) -> str:
        return "UseCaseAudit()"

    async def refusal(
        self,
        caller: Caller,
        action: str,
        tokens: Sequence[str],
        purpose: str,
        request: RequestContext,
        exc: VaultError,
        detail: Mapping[str, str] | None = None,
    ) -> None:
        """One record of a refused or failed call (best effort: it already fails)."""
        if self._sink is None:
            return
        named = tuple(
            t if _RANDOM_TOKEN.fullmatch(t) else _NOT_RECORDED
            for t in tokens[: self._limits.max_batch]
        )
        event = AuditEvent(
            self._clock.now(),
            caller.name,
            caller.tenant,
            action,
            named,
            # A refused purpose may be the very text refused (a card number).
            recordable(purpose, self._limits.max_purpose_chars),
            OUTCOME_DENIED if isinstance(exc, _DENIED) else OUTCOME_ERROR,
            exc.reason,
            request.request_id,
            request.peer,
            {"token_count": str(len(tokens)), **(detail or {})},
        )
        try:
            await self._sink.record([event])
        except Exception as audit_exc:  # noqa: BLE001 - the call fails with its own error
            log.error("audit of a refused call failed: %s", type(audit_exc).__name__)
        else:
            exc.audited = True

    async def done(self, events: list[AuditEvent]) -> None:
        """Make the records of a completed call durable, or fail the call (fail closed)."""
        if self._sink is None:
            return
        try:
            await self._sink.record(events)
        except Exception as exc:  # noqa: BLE001 - whatever failed, nothing leaves unaudited
            log.error("audit append failed: %s", type(exc).__name__)
            raise UnavailableError(
                "the audit trail cannot be written; retry later", reason="AUDIT_UNAVAILABLE"
            ) from None

    async def completed(
        self, caller: Caller, action: str, token: str, request: RequestContext, **detail: str
    ) -> None:
        """The record of a completed call on one token (delete, update)."""
        event = AuditEvent(
            self._clock.now(),
            caller.name,
            caller.tenant,
            action,
            (token,),
            request_id=request.request_id,
            peer=request.peer,
            detail=detail,
        )
        await self.done([event])


def reveal_detail(kinds: Sequence[DataKind]) -> dict[str, str]:
    """The detail of a reveal record (never a value): ``kind`` when every value is of one
    kind (all a one-token record has, as before); for several tokens also their count and
    ``kinds``, e.g. "PAN:2,EXPIRY:1" (in order of first appearance)."""
    counts = Counter(k.name for k in kinds)
    detail: dict[str, str] = {}
    if len(counts) == 1:
        detail["kind"] = next(iter(counts))
    if len(kinds) > 1:
        detail["token_count"] = str(len(kinds))
        detail["kinds"] = ",".join(f"{k}:{n}" for k, n in counts.items())
    return detail


def reveal_event(
    now: float,
    caller: Caller,
    revealed: Sequence[tuple[str, DataKind]],
    purpose: str,
    ctx: RequestContext,
    detail: Mapping[str, str],
) -> AuditEvent:
    """A call's one reveal record: every (token, kind) revealed, in order, the tokens
    listed and the kinds counted (never a value); ``detail`` adds the call's own facts."""
    return AuditEvent(
        now,
        caller.name,
        caller.tenant,
        ACTION_REVEAL,
        tuple(token for token, _ in revealed),
        purpose,
        OUTCOME_OK,
        "",
        ctx.request_id,
        ctx.peer,
        {**detail, **reveal_detail([kind for _, kind in revealed])},
    )
