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

from dataclasses import dataclass
from typing import Protocol

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
from vault.domain.codec import RecordCodec
from vault.domain.cvc import CvcHandling
from vault.domain.keys import KeyMaterial
from vault.domain.model import DataKind, RequestContext, Value
from vault.domain.reveal_policy import RevealPolicy
from vault.domain.validation import Validator, has_control
from vault.errors import (
    FailedPreconditionError,
    FieldViolation,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    UnauthenticatedError,
    UnavailableError,
    VaultError,
)
from vault.storage.base import AuditStore, SubjectStore

__all__ = ["ExportedRecord", "ExportedReveal", "SubjectExport", "SubjectRequests"]

_MAX_REASON_CHARS = 256
_NO_CONTEXT = RequestContext()
_DENIED = (PermissionDeniedError, UnauthenticatedError, NotFoundError, FailedPreconditionError)


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

    @staticmethod
    def _check_reason(reason: str) -> None:
        if not reason.strip():
            raise InvalidArgumentError(
                FieldViolation("reason", "is required: say why"), reason="REASON_REQUIRED"
            )
        if len(reason) > _MAX_REASON_CHARS or has_control(reason):
            raise InvalidArgumentError(
                FieldViolation(
                    "reason", f"must be at most {_MAX_REASON_CHARS} printable characters"
                )
            )

    async def _changing_request(
        self, caller: Caller, subject: str, reason: str, detail: dict[str, str]
    ) -> bytes:
        """The checks an erase or a hold starts with (scope, subject, reason); the
        subject's ref, also put in the audit detail."""
        require_scope(caller, SCOPE_SUBJECTS)
        self._validator.check_subject(subject)
        self._check_reason(reason)
        ref = await self._ref(caller.tenant, subject)
        detail["subject_ref"] = ref.hex()
        return ref

    async def _ref(self, tenant: str, subject: str) -> bytes:
        fp = await self._keys.fingerprinter(tenant)
        return fp.digest(b"subject", subject.encode())

    # -- audit -------------------------------------------------------------------

    async def _record(
        self,
        caller: Caller,
        action: str,
        ctx: RequestContext,
        detail: dict[str, str],
        *,
        reason_text: str = "",
        error: VaultError | None = None,
    ) -> None:
        """One record of the request; a refusal's is best effort (it fails anyway), a
        completed request's must be durable before the answer leaves (fail closed)."""
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
            purpose=reason_text if len(reason_text) <= _MAX_REASON_CHARS else "",
            outcome=outcome,
            reason=error.reason if error is not None else "",
            request_id=ctx.request_id,
            peer=ctx.peer,
            detail=detail,
        )
        try:
            await self._audit.record([event])
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
        self, caller: Caller, subject: str, *, request: RequestContext | None = None
    ) -> SubjectExport:
        """Every value the vault holds for the subject in the caller's tenant, and the
        reveals of them the audit trail records. NOT_FOUND if it holds none."""
        ctx = request or _NO_CONTEXT
        detail: dict[str, str] = {}
        try:
            require_scope(caller, SCOPE_SUBJECTS)
            self._validator.check_subject(subject)
            ref = await self._ref(caller.tenant, subject)
            detail["subject_ref"] = ref.hex()
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
                raise NotFoundError(
                    "the vault holds nothing for this subject", reason="SUBJECT_NOT_FOUND"
                )
            audit_rows = await self._store.audit_records_for_tokens(
                caller.tenant, ACTION_REVEAL, [r.token for r in records]
            )
            held = await self._store.subject_held(caller.tenant, ref)
        except VaultError as exc:
            await self._record(caller, ACTION_SUBJECT_EXPORT, ctx, detail, error=exc)
            raise
        reveals = [
            ExportedReveal(a.time, a.caller, a.purpose, a.tokens[0], a.request_id)
            for a in audit_rows
            if a.outcome == OUTCOME_OK and len(a.tokens) == 1
        ]
        detail |= {"records": str(len(records)), "reveals": str(len(reveals))}
        await self._record(caller, ACTION_SUBJECT_EXPORT, ctx, detail)
        return SubjectExport(records, reveals, held)

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
            ref = await self._changing_request(caller, subject, reason, detail)
            # Rows first, in one transaction with the hold check; then the key (a failure
            # in between leaves a key and no rows: erasing again destroys it).
            outcome = await self._store.erase_subject(caller.tenant, ref)
            if outcome.held:
                raise FailedPreconditionError(
                    "the subject is under legal hold", reason="LEGAL_HOLD"
                )
            cvcs = self._cvc.erase_subject(caller.tenant, subject)
            subject_keys = self._codec.subject_keys
            destroyed = (
                await subject_keys.destroy(caller.tenant, ref)
                if subject_keys is not None
                else False
            )
            erased = outcome.erased + cvcs
            if not erased and not destroyed:
                raise NotFoundError(
                    "the vault holds nothing for this subject", reason="SUBJECT_NOT_FOUND"
                )
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
            ref = await self._changing_request(caller, subject, reason, detail)
            if hold:
                if not await self._store.subject_tokens(caller.tenant, ref):
                    raise NotFoundError(
                        "the vault holds nothing for this subject", reason="SUBJECT_NOT_FOUND"
                    )
                changed = await self._store.set_subject_hold(
                    caller.tenant, ref, reason, self._clock.now()
                )
            else:
                changed = await self._store.release_subject_hold(caller.tenant, ref)
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
