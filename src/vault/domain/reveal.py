"""Reveal: Detokenize and BatchDetokenize. Scope, purpose and reveal rate are checked
before any lookup; every value shown is audited before it is returned (one record per
call, naming every token it revealed, in order), and a call whose record cannot be
written reveals nothing."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from vault import metrics
from vault.audit.base import ACTION_REVEAL, AuditEvent
from vault.auth.policy import SCOPE_DETOKENIZE, Caller
from vault.auth.policy import require as require_scope
from vault.clock import Clock
from vault.domain.auditing import NO_CONTEXT, UseCaseAudit, reveal_event
from vault.domain.codec import KINDS, RecordCodec
from vault.domain.cvc import CvcHandling, HeldCvcs
from vault.domain.model import RequestContext
from vault.domain.reading import TokenReader
from vault.domain.results import Revealed
from vault.domain.reveal_policy import RevealPolicy
from vault.domain.validation import Validator
from vault.errors import VaultError

__all__ = ["Reveal"]


class Reveal:
    """The Detokenize use case (one token or a batch, in order, all or nothing)."""

    def __init__(
        self,
        reader: TokenReader,
        codec: RecordCodec,
        policy: RevealPolicy,
        cvc: CvcHandling,
        validator: Validator,
        audit: UseCaseAudit,
        clock: Clock,
    ) -> None:
        self._reader = reader
        self._codec = codec
        self._policy = policy
        self._cvc = cvc
        self._validator = validator
        self._audit = audit
        self._clock = clock

    def __repr__(self) -> str:
        return "Reveal()"

    async def detokenize(
        self,
        caller: Caller,
        tokens: Sequence[str],
        purpose: str,
        *,
        batch: bool,
        request: RequestContext | None = None,
    ) -> list[Revealed]:
        """Values of the tokens, in order; the call is audited (one record naming every
        token revealed) before anything is returned."""
        ctx = request or NO_CONTEXT
        try:
            require_scope(caller, SCOPE_DETOKENIZE)
            if batch:
                self._validator.check_batch_size(len(tokens), "tokens")
            self._validator.check_purpose(purpose)
            # Before any lookup, like the scope: a limited caller learns nothing more.
            self._policy.take(caller, len(tokens))
            held = self._cvc.take(caller, tokens, self._policy)
        except VaultError as exc:
            await self._audit.refusal(caller, ACTION_REVEAL, tokens, purpose, ctx, exc)
            raise
        try:
            out = await self._reveal(caller, tokens, held, batch=batch)
        except VaultError as exc:
            held.give_back()
            await self._audit.refusal(caller, ACTION_REVEAL, tokens, purpose, ctx, exc)
            raise
        detail = {"batch_size": str(len(out))} if batch else {}
        try:
            await self._audit.done(self._events(caller, out, purpose, ctx, detail))
        except BaseException:
            held.give_back()
            raise
        for kind, n in Counter(r.kind for r in out).items():
            metrics.TOKENS_REVEALED.labels(kind.name).inc(n)
        return out

    async def open_for_use(
        self, caller: Caller, tokens: Sequence[str]
    ) -> tuple[list[Revealed], HeldCvcs]:
        """Values used inside the process and never shown (Forward): the reveal rate,
        the caller's kinds and tenant apply as for Detokenize; CVCs are spent. The caller
        checks its own scope and purpose, audits, and gives the CVCs back
        (HeldCvcs.give_back) if no value left the process after all."""
        self._policy.take(caller, len(tokens))
        held = self._cvc.take(caller, tokens, self._policy)
        try:
            return await self._reveal(caller, tokens, held, batch=True), held
        except BaseException:
            held.give_back()
            raise

    async def _reveal(
        self, caller: Caller, tokens: Sequence[str], held: HeldCvcs, *, batch: bool
    ) -> list[Revealed]:
        """Values in order: CVCs from memory, the rest from the store."""
        stored = [t for i, t in enumerate(tokens) if i not in held]
        loaded = (
            await self._reader.load(caller, stored, "tokens" if batch else "token")
            if stored
            else []
        )
        skeys = await self._codec.subject_keys_for(loaded)
        rows = iter(loaded)
        out = []
        for i in range(len(tokens)):
            if i in held:
                out.append(held.revealed(i))
                continue
            row = next(rows)
            self._policy.check_kinds(caller, (KINDS[row.kind],))
            opened = self._codec.open(row, skeys)
            out.append(
                Revealed(row.token, opened.kind, opened.value, opened.metadata, opened.subject)
            )
        return out

    def _events(
        self,
        caller: Caller,
        out: list[Revealed],
        purpose: str,
        ctx: RequestContext,
        detail: dict[str, str],
    ) -> list[AuditEvent]:
        """The call's one record: every token revealed, in order, with the count and the
        kinds (never a value)."""
        return [
            reveal_event(
                self._clock.now(), caller, [(r.token, r.kind) for r in out], purpose, ctx, detail
            )
        ]
