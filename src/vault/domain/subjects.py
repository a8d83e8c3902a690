"""Data-subject requests: export (access), erasure, legal hold.

A subject is a caller-chosen id (e.g. a customer id) scoped to the tenant. The store
knows it only as ``subject_ref``, the HMAC of the id under the tenant's fingerprint key;
the id itself is encrypted inside each record. The audit trail names a subject by its
subject_ref too: the trail is append-only and outlives an erasure, and the id is
personal data (an operator who knows an id can compute its ref to find the records).

Erasure removes every row of the subject (secure_delete overwrites them), destroys the
subject's key (so copies of the store taken earlier no longer decrypt them) and drops
its CVCs held in this process's memory (other processes' CVCs expire within cvc_ttl).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from vault import metrics
from vault.audit.base import (
    ACTION_REVEAL,
    ACTION_SUBJECT_ERASE,
    ACTION_SUBJECT_EXPORT,
    ACTION_SUBJECT_HOLD,
    ACTION_SUBJECT_RELEASE,
    OUTCOME_DENIED,
    OUTCOME_ERROR,
    OUTCOME_OK,
    AuditEvent,
    AuditSink,
)
from vault.auth.policy import SCOPE_SUBJECTS, Caller
from vault.auth.policy import require as require_scope
from vault.clock import Clock
from vault.domain.auditing import reveal_event
from vault.domain.codec import RecordCodec
from vault.domain.cvc import CvcHandling
from vault.domain.keys import KeyMaterial
from vault.domain.model import DataKind, RequestContext, Value
from vault.domain.reveal_policy import RevealPolicy
from vault.domain.validation import Validator, recordable
from vault.errors import (
    FailedPreconditionError,
    NotFoundError,
    PermissionDeniedError,
    UnauthenticatedError,
    UnavailableError,
    VaultError,
)
from vault.storage.base import AuditStore, SubjectStore

__all__ = ["ExportedRecord", "ExportedReveal", "SubjectExport", "SubjectRequests"]

_NO_CONTEXT = RequestContext()
_DENIED = (PermissionDeniedError, UnauthenticatedError, NotFoundError, FailedPreconditionError)


def _nothing_held() -> NotFoundError:
    return NotFoundError("the vault holds nothing for this subject", reason="SUBJECT_NOT_FOUND")


@dataclass(frozen=True, slots=True)
class ExportedRecord:
    token: str
    kind: DataKind
    value: Value
    metadata: dict[str, str]
    created_at: float
    expires_at: float | None

    def __repr__(self) -> str:
        return f"ExportedRecord(kind={self.kind.name})"


@dataclass(frozen=True, slots=True)
class ExportedReveal:
    """One reveal of one of the subject's values, from the audit trail."""

    time: float
    caller: str
    purpose: str
    token: str
    request_id: str


@dataclass(frozen=True, slots=True)
class SubjectExport:
    records: list[ExportedRecord]
    reveals: list[ExportedReveal]
    held: bool  # under legal hold


class SubjectAndAuditStore(SubjectStore, AuditStore, Protocol):
    """What subject requests read and change: the subject's rows and holds, and the
    reveals of its tokens in the trail."""


class SubjectRequests:
    """ExportSubject, EraseSubject, SetLegalHold; each needs the `subjects` scope."""

    def __init__(
        self,
        store: SubjectAndAuditStore,
        codec: RecordCodec,
        policy: RevealPolicy,
        validator: Validator,
        cvc: CvcHandling,
        keys: KeyMaterial,
        clock: Clock,
        audit: AuditSink | None,
    ) -> None:
        self._store = store
        self._codec = codec
        self._policy = policy
        self._validator = validator
        self._cvc = cvc
        self._keys = keys
        self._clock = clock
        self._audit = audit

    def __repr__(self) -> str:
        return "SubjectRequests()"

    # -- checks ------------------------------------------------------------------

    async def _changing_request(
        self, caller: Caller, subject: str, reason: str, detail: dict[str, str]
    ) -> tuple[str, bytes | None]:
        """The checks an erase or a hold starts with (scope, subject, reason); the
        subject's normal form and ref (the ref also put in the audit detail)."""
        require_scope(caller, SCOPE_SUBJECTS)
        subject = self._validator.check_subject(subject)
        self._validator.check_reason(reason)
        ref = await self._ref(caller.tenant, subject, detail)
        return subject, ref

    async def _ref(self, tenant: str, subject: str, detail: dict[str, str]) -> bytes | None:
        """The subject_ref of a subject id in its normal form (as tokenize computes it),
        also put in the audit detail. None when the tenant has no fingerprint key: it
        never stored a value, so no subject has one (and a request that finds nothing
        must not write a key)."""
        fp = await self._keys.existing_fingerprinter(tenant)
        if fp is None:
            return None
        ref = fp.digest(b"subject", subject.encode())
        detail["subject_ref"] = ref.hex()
        return ref

    # -- audit -------------------------------------------------------------------

    def _reveal_events(
        self, caller: Caller, ctx: RequestContext, purpose: str, records: Sequence[ExportedRecord]
    ) -> list[AuditEvent]:
        """An export reveals every value it returns: one reveal record naming every
        exported token, as a BatchDetokenize writes, so each shows in that token's reveal
        history."""
        return [
            reveal_event(
                self._clock.now(),
                caller,
                [(r.token, r.kind) for r in records],
                purpose,
                ctx,
                {"method": "ExportSubject"},
            )
        ]

    async def _record(
        self,
        caller: Caller,
        action: str,
        ctx: RequestContext,
        detail: dict[str, str],
        *,
        reason_text: str = "",
        error: VaultError | None = None,
        reveals: Sequence[AuditEvent] = (),
    ) -> None:
        """One record of the request (after ``reveals``, written with it in one append); a
        refusal's is best effort (it fails anyway), a completed request's must be durable
        before the answer leaves (fail closed)."""
        if self._audit is None:
            return
        outcome = OUTCOME_OK
        if error is not None:
            outcome = OUTCOME_DENIED if isinstance(error, _DENIED) else OUTCOME_ERROR
        event = AuditEvent(
            self._clock.now(),
            caller.name,
            caller.tenant,
            action,
            # A refused reason or purpose may be the very text refused (a card number).
            purpose=recordable(reason_text, self._validator.limits.max_reason_chars),
            outcome=outcome,
            reason=error.reason if error is not None else "",
            request_id=ctx.request_id,
            peer=ctx.peer,
            detail=detail,
        )
        try:
            await self._audit.record([*reveals, event])
        except Exception:  # noqa: BLE001 - mapped below, whatever failed
            if error is None:
                raise UnavailableError(
                    "the audit trail cannot be written; retry later", reason="AUDIT_UNAVAILABLE"
                ) from None
        else:
            if error is not None:
                error.audited = True

    # -- export ------------------------------------------------------------------

    async def export(
        self,
        caller: Caller,
        subject: str,
        *,
        purpose: str,
        request: RequestContext | None = None,
    ) -> SubjectExport:
        """Every value the vault holds for the subject in the caller's tenant, and the
        reveals of them the audit trail records. NOT_FOUND if it holds none. An export
        is a reveal of every value in it: it needs a purpose, and one reveal record names
        every exported token (the next export lists each of them)."""
        ctx = request or _NO_CONTEXT
        detail: dict[str, str] = {}
        try:
            require_scope(caller, SCOPE_SUBJECTS)
            subject = self._validator.check_subject(subject)
            self._validator.check_purpose(purpose)
            ref = await self._ref(caller.tenant, subject, detail)
            if ref is None:
                raise _nothing_held()
            records = await self._open_subject(caller, subject, ref)
            audit_rows = await self._store.audit_records_for_tokens(
                caller.tenant, ACTION_REVEAL, [r.token for r in records]
            )
            held = await self._store.subject_held(caller.tenant, ref)
        except VaultError as exc:
            await self._record(
                caller, ACTION_SUBJECT_EXPORT, ctx, detail, reason_text=purpose, error=exc
            )
            raise
        # A record names every token its call revealed: one reveal per token of this
        # subject's (a batch's other tokens are not the subject's history).
        mine = {r.token for r in records}
        reveals = [
            ExportedReveal(a.time, a.caller, a.purpose, token, a.request_id)
            for a in audit_rows
            if a.outcome == OUTCOME_OK
            for token in a.tokens
            if token in mine
        ]
        detail |= {"records": str(len(records)), "reveals": str(len(reveals))}
        await self._record(
            caller,
            ACTION_SUBJECT_EXPORT,
            ctx,
            detail,
            reason_text=purpose,
            reveals=self._reveal_events(caller, ctx, purpose, records),
        )
        for kind, n in Counter(r.kind for r in records).items():
            metrics.TOKENS_REVEALED.labels(kind.name).inc(n)
        return SubjectExport(records, reveals, held)

    async def _open_subject(self, caller: Caller, subject: str, ref: bytes) -> list[ExportedRecord]:
        """The subject's values, decrypted; NOT_FOUND when there are none."""
        rows = await self._store.subject_tokens(caller.tenant, ref)
        # An export reveals values: the caller's reveal kinds and rate apply as to
        # Detokenize (a kind it may not reveal refuses the whole export).
        self._policy.check_rows(caller, rows)
        skeys = await self._codec.subject_keys_for(rows)
        records = []
        for row in rows:
            try:
                opened = self._codec.open(row, skeys)
            except NotFoundError:
                continue  # its key is destroyed: erased, unreadable by anyone
            if opened.subject != subject:
                continue  # another id with the same HMAC: not this subject's
            records.append(
                ExportedRecord(
                    row.token,
                    opened.kind,
                    opened.value,
                    opened.metadata,
                    row.created_at,
                    row.expires_at,
                )
            )
        if not records:
            raise _nothing_held()
        return records

    # -- erasure -----------------------------------------------------------------

    async def erase(
        self,
        caller: Caller,
        subject: str,
        reason: str,
        *,
        request: RequestContext | None = None,
    ) -> int:
        """Remove every value of the subject and destroy its key; returns how many values
        (stored and CVCs) went. A held subject is refused; erasing twice is NOT_FOUND."""
        ctx = request or _NO_CONTEXT
        detail: dict[str, str] = {}
        try:
            subject, ref = await self._changing_request(caller, subject, reason, detail)
            stored, destroyed = await self._erase_stored(caller.tenant, ref)
            cvcs = self._cvc.erase_subject(caller.tenant, subject)
            erased = stored + cvcs
            if not erased and not destroyed:
                raise _nothing_held()
        except VaultError as exc:
            await self._record(
                caller, ACTION_SUBJECT_ERASE, ctx, detail, reason_text=reason, error=exc
            )
            raise
        detail |= {
            "erased_count": str(erased),
            "cvc_count": str(cvcs),
            "key_destroyed": str(destroyed).lower(),
        }
        await self._record(caller, ACTION_SUBJECT_ERASE, ctx, detail, reason_text=reason)
        return erased

    async def _erase_stored(self, tenant: str, ref: bytes | None) -> tuple[int, bool]:
        """Erase the subject's rows, then its key: (rows erased, key destroyed). Rows
        first, in one transaction with the hold check; then the key (a failure in
        between leaves a key and no rows: erasing again destroys it)."""
        if ref is None:
            return 0, False
        outcome = await self._store.erase_subject(tenant, ref)
        if outcome.held:
            raise FailedPreconditionError("the subject is under legal hold", reason="LEGAL_HOLD")
        subject_keys = self._codec.subject_keys
        destroyed = await subject_keys.destroy(tenant, ref) if subject_keys is not None else False
        return outcome.erased, destroyed

    # -- legal hold --------------------------------------------------------------

    async def set_legal_hold(
        self,
        caller: Caller,
        subject: str,
        *,
        hold: bool,
        reason: str,
        request: RequestContext | None = None,
    ) -> bool:
        """Hold or release the subject; returns whether anything changed (holding a held
        subject keeps the first hold). Unknown subjects, and releasing a subject that
        is not held, are NOT_FOUND."""
        ctx = request or _NO_CONTEXT
        action = ACTION_SUBJECT_HOLD if hold else ACTION_SUBJECT_RELEASE
        detail: dict[str, str] = {}
        try:
            _, ref = await self._changing_request(caller, subject, reason, detail)
            if hold:
                if ref is None or not await self._store.subject_tokens(caller.tenant, ref):
                    raise _nothing_held()
                changed = await self._store.set_subject_hold(
                    caller.tenant, ref, reason, self._clock.now()
                )
            else:
                changed = ref is not None and await self._store.release_subject_hold(
                    caller.tenant, ref
                )
                if not changed:
                    raise NotFoundError(
                        "the subject is not under legal hold", reason="HOLD_NOT_FOUND"
                    )
        except VaultError as exc:
            await self._record(caller, action, ctx, detail, reason_text=reason, error=exc)
            raise
        detail["changed"] = str(changed).lower()
        await self._record(caller, action, ctx, detail, reason_text=reason)
        return changed
