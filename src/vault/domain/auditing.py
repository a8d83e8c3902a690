"""The audit records of the token use cases: one for a refused or failed call (best
effort), and those of a completed call, which must be durable or the call fails."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence

from vault.audit.base import OUTCOME_DENIED, OUTCOME_ERROR, AuditEvent, AuditSink
from vault.auth.policy import Caller
from vault.clock import Clock
from vault.domain.model import RequestContext
from vault.domain.validation import Limits, recordable
from vault.errors import (
    NotFoundError,
    PermissionDeniedError,
    UnauthenticatedError,
    UnavailableError,
    VaultError,
)

__all__ = ["NO_CONTEXT", "UseCaseAudit"]

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
