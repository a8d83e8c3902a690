"""The token use cases: tokenize, detokenize, describe, delete, purge.

Each takes an authenticated Caller and checks its scope before looking anything up, so
a caller without permission learns nothing about what exists. A token of another tenant
is answered exactly like a missing one.
"""

from __future__ import annotations

import json
import logging
import re
import struct
import unicodedata
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from vault import metrics
from vault.audit.base import (
    ACTION_DELETE,
    ACTION_REVEAL,
    ACTION_UPDATE,
    OUTCOME_DENIED,
    OUTCOME_ERROR,
    OUTCOME_OK,
    AuditEvent,
    AuditSink,
)
from vault.auth.policy import SCOPE_DETOKENIZE, SCOPE_REVEAL_MASKED, SCOPE_TOKENIZE, Caller
from vault.auth.policy import require as require_scope
from vault.auth.policy import require_any as require_any_scope
from vault.auth.ratelimit import RevealLimiter
from vault.clock import Clock
from vault.crypto.aead import record_aad
from vault.crypto.keyring import Fingerprinter
from vault.crypto.subject import SubjectKey, subject_layer_aad
from vault.domain import kinds
from vault.domain.ephemeral import EphemeralEntry, EphemeralStore, cvc_metadata_violations
from vault.domain.keys import KeyMaterial
from vault.domain.model import ADDRESS_KINDS, DataKind, RequestContext, TokenFormat, Value
from vault.domain.subject_keys import SubjectKeys
from vault.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    FieldViolation,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    UnauthenticatedError,
    UnavailableError,
    VaultError,
)
from vault.storage.base import InsertStatus, Store, TokenRecord, TokenUpdate, UpdateStatus

__all__ = [
    "Limits",
    "Opened",
    "Revealed",
    "TokenInfo",
    "TokenVault",
    "TokenizeItem",
    "Tokenized",
    "has_control",
]


@dataclass(frozen=True, slots=True)
class Limits:
    """Request limits; each is documented in the README's Limits table."""

    max_batch: int = 1000
    max_metadata_entries: int = 32
    max_metadata_key_chars: int = 64
    max_metadata_value_chars: int = 512
    max_subject_chars: int = 256
    max_request_id_chars: int = 128
    max_purpose_chars: int = 256
    max_ttl_seconds: float = 100 * 366 * 86400.0
    # Attempts at drawing an unused PAN token before giving up (the space for a short
    # PAN with BIN and last four kept can be a few dozen tokens).
    max_token_attempts: int = 16
    # CVCs live in memory only: this long by default (ttl may ask for less, or more up to
    # the maximum), and this many reveals.
    cvc_ttl_seconds: float = 600.0
    cvc_max_ttl_seconds: float = 3600.0
    cvc_reveals: int = 1


# Not frozen: built once per item on the hot path, where a frozen init costs ~2x.
@dataclass(slots=True)
class TokenizeItem:
    kind: int
    value: Value | None
    token_format: int = TokenFormat.UNSPECIFIED
    deterministic: bool = False
    subject: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)
    ttl_seconds: float | None = None
    request_id: str = ""

    def __repr__(self) -> str:
        return f"TokenizeItem(kind={self.kind})"


# Not frozen: built once per item on the hot path, where a frozen init costs ~2x.
@dataclass(slots=True)
class Tokenized:
    token: str
    fingerprint: str
    masked: str
    created: bool
    expires_at: float | None


# Not frozen: built once per item on the hot path, where a frozen init costs ~2x.
@dataclass(slots=True)
class Revealed:
    token: str
    kind: DataKind
    value: Value
    metadata: dict[str, str]
    subject: str

    def __repr__(self) -> str:
        return f"Revealed(kind={self.kind.name})"


@dataclass(frozen=True, slots=True)
class TokenInfo:
    token: str
    kind: DataKind
    token_format: TokenFormat
    masked: str
    fingerprint: str
    subject: str
    metadata: dict[str, str]
    deterministic: bool
    created_at: float
    expires_at: float | None
    key_version: int


_METADATA_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")
_REQUEST_ID = re.compile(r"[\x21-\x7e]+")
_KINDS = {int(k): k for k in DataKind}
# HMAC domain of a value's fingerprint: the kind, so equal text of two kinds differs.
_KIND_DOMAINS = {k: b"kind:%d" % k for k in DataKind}
_PAN_FORMATS = frozenset({TokenFormat.PAN_LAST4, TokenFormat.PAN_BIN_LAST4})
_PAYLOAD_VERSION = 1
# First byte of a data-key layer plaintext that is a subject-key layer (nonce || GCM of
# the payload under the subject key) rather than the payload itself.
_SUBJECT_LAYER = b"\x02"
_NO_SUBJECT_KEYS: dict[bytes, SubjectKey | None] = {}
# Attempts at a correction that loses its compare-and-set to a concurrent rewrap.
_UPDATE_ATTEMPTS = 3
_LEN = struct.Struct(">I")
_NO_CONTEXT = RequestContext()
# What a refused call's record names instead of a string that is not a random-format
# token: a caller who sends a card number where a token belongs must not put it in the
# trail (PAN-shaped tokens are digits too, so they are left out of refusals as well).
_RANDOM_TOKEN = re.compile(r"tok_[a-z2-7]{32}")
_NOT_RECORDED = "[not recorded]"
_DENIED = (PermissionDeniedError, UnauthenticatedError, NotFoundError)

log = logging.getLogger(__name__)


def has_control(text: str) -> bool:
    """Whether the text has a control (or other category C) character."""
    return any(unicodedata.category(ch)[0] == "C" for ch in text)


def _encode_payload(value: bytes, subject: str, metadata: Mapping[str, str]) -> bytes:
    """What is encrypted: version, value, subject, metadata (JSON, only when present)."""
    subject_b = subject.encode()
    meta_b = json.dumps(dict(metadata), separators=(",", ":")).encode() if metadata else b""
    return b"".join(
        (
            bytes((_PAYLOAD_VERSION,)),
            _LEN.pack(len(value)),
            value,
            _LEN.pack(len(subject_b)),
            subject_b,
            meta_b,
        )
    )


@dataclass(frozen=True, slots=True)
class Opened:
    """A stored record, decrypted."""

    kind: DataKind
    value: Value
    subject: str
    metadata: dict[str, str]

    def __repr__(self) -> str:
        return f"Opened(kind={self.kind.name})"


def _decode_payload(data: bytes) -> tuple[bytes, str, dict[str, str]]:
    try:
        if data[0] != _PAYLOAD_VERSION:
            raise ValueError  # noqa: TRY301 - mapped to one error below
        (vlen,) = _LEN.unpack_from(data, 1)
        value = data[5 : 5 + vlen]
        pos = 5 + vlen
        (slen,) = _LEN.unpack_from(data, pos)
        subject = data[pos + 4 : pos + 4 + slen].decode()
        rest = data[pos + 4 + slen :]
        metadata = json.loads(rest) if rest else {}
    except (IndexError, ValueError, struct.error, UnicodeDecodeError):
        raise InternalError("stored value is malformed") from None
    return value, subject, metadata


class TokenVault:
    """The token use cases over a store, the keys, a clock and the audit trail.

    ``audit`` is None only where nothing is served (the in-process benchmark); the
    composition root always passes the trail, and then no value is returned unless its
    reveal records are durable.
    """

    def __init__(
        self,
        store: Store,
        keys: KeyMaterial,
        clock: Clock,
        limits: Limits | None = None,
        *,
        audit: AuditSink | None = None,
        on_encrypt: Callable[[int, int], None] | None = None,
        subject_keys: SubjectKeys | None = None,
    ) -> None:
        self._store = store
        # Told (key version, count) after each store write of new records: the key
        # auto-rotation notices the encryption limit between its checks.
        self._on_encrypt = on_encrypt
        self._keys = keys
        self._clock = clock
        self.limits = limits or Limits()
        self._audit = audit
        # None only where no subject is ever given (the in-process benchmark).
        self.subject_keys = subject_keys
        self._limiter = RevealLimiter(clock)
        self.ephemeral = EphemeralStore(clock)

    def __repr__(self) -> str:
        return "TokenVault()"

    # -- validation --------------------------------------------------------------

    def _check_item(self, item: TokenizeItem) -> tuple[DataKind, TokenFormat, Value]:
        """Validated kind, resolved format and normalised value; all violations at once."""
        violations: list[FieldViolation] = []
        kind: DataKind | None = None
        fmt = TokenFormat.UNSPECIFIED
        value: Value | None = None
        kind = _KINDS.get(item.kind)
        if kind is None or kind is DataKind.UNSPECIFIED:
            violations.append(FieldViolation("kind", "must be a known data kind"))
        else:
            if kind is DataKind.CVC:
                violations.extend(self._check_cvc(item))
            try:
                fmt = kinds.resolve_format(kind, TokenFormat(item.token_format))
            except ValueError:
                violations.append(FieldViolation("format", "must be a known token format"))
            except InvalidArgumentError as exc:
                violations.extend(exc.violations)
            if item.value is None:
                field_name = "address" if kind in ADDRESS_KINDS else "text"
                violations.append(FieldViolation(field_name, "is required"))
            else:
                field_name = "text" if isinstance(item.value, str) else "address"
                try:
                    value = kinds.normalize(kind, item.value, field_name)
                except InvalidArgumentError as exc:
                    violations.extend(exc.violations)
            if (
                value is not None
                and kind is DataKind.PAN
                and fmt in _PAN_FORMATS
                and isinstance(value, str)
            ):
                try:
                    kinds.check_pan_format(value, fmt)
                except InvalidArgumentError as exc:
                    violations.extend(exc.violations)
        violations.extend(self._check_extras(item))
        if violations or kind is None or value is None:
            raise InvalidArgumentError(violations)
        return kind, fmt, value

    def _check_cvc(self, item: TokenizeItem) -> list[FieldViolation]:
        """A CVC is held in memory for one authorisation: no deterministic token (its
        fingerprint would index a 3-4 digit value), no idempotency record, a short TTL."""
        out = []
        if item.deterministic:
            out.append(FieldViolation("deterministic", "is not allowed for DATA_KIND_CVC"))
        if item.request_id:
            out.append(FieldViolation("request_id", "is not allowed for DATA_KIND_CVC"))
        out.extend(cvc_metadata_violations(item.metadata))
        max_ttl = self.limits.cvc_max_ttl_seconds
        if item.ttl_seconds is not None and item.ttl_seconds > max_ttl:
            out.append(
                FieldViolation("ttl", f"must be at most {max_ttl:g} seconds for DATA_KIND_CVC")
            )
        return out

    def _check_extras(self, item: TokenizeItem) -> list[FieldViolation]:
        lim = self.limits
        out: list[FieldViolation] = []
        if len(item.subject) > lim.max_subject_chars or has_control(item.subject):
            out.append(
                FieldViolation(
                    "subject", f"must be at most {lim.max_subject_chars} printable characters"
                )
            )
        if len(item.metadata) > lim.max_metadata_entries:
            out.append(FieldViolation("metadata", f"at most {lim.max_metadata_entries} entries"))
        for key, val in item.metadata.items():
            if len(key) > lim.max_metadata_key_chars or not _METADATA_KEY.fullmatch(key):
                out.append(
                    FieldViolation(
                        "metadata",
                        f"keys must be 1 to {lim.max_metadata_key_chars} characters "
                        "of letters, digits, '_', '.', '-'",
                    )
                )
                break
            if len(val) > lim.max_metadata_value_chars or has_control(val):
                out.append(
                    FieldViolation(
                        "metadata",
                        f"values must be at most {lim.max_metadata_value_chars} "
                        "printable characters",
                    )
                )
                break
        if item.ttl_seconds is not None and not (0 < item.ttl_seconds <= lim.max_ttl_seconds):
            out.append(FieldViolation("ttl", "must be positive and at most 100 years"))
        if item.request_id and (
            len(item.request_id) > lim.max_request_id_chars
            or not _REQUEST_ID.fullmatch(item.request_id)
        ):
            out.append(
                FieldViolation(
                    "request_id",
                    f"must be at most {lim.max_request_id_chars} printable ASCII characters",
                )
            )
        return out

    def _check_batch_size(self, n: int, field_name: str) -> None:
        if n == 0:
            raise InvalidArgumentError(FieldViolation(field_name, "must not be empty"))
        if n > self.limits.max_batch:
            raise InvalidArgumentError(
                FieldViolation(field_name, f"at most {self.limits.max_batch} per call")
            )

    def _check_purpose(self, purpose: str) -> None:
        if not purpose.strip():
            raise InvalidArgumentError(
                FieldViolation("purpose", "is required: say why the value is needed"),
                reason="PURPOSE_REQUIRED",
            )
        if len(purpose) > self.limits.max_purpose_chars or has_control(purpose):
            raise InvalidArgumentError(
                FieldViolation(
                    "purpose",
                    f"must be at most {self.limits.max_purpose_chars} printable characters",
                )
            )

    # -- tokenize ----------------------------------------------------------------

    @staticmethod
    def _new_token(kind: DataKind, fmt: TokenFormat, value: Value) -> str:
        if kind is DataKind.PAN and fmt in _PAN_FORMATS and isinstance(value, str):
            return kinds.new_pan_token(value, fmt)
        return kinds.new_random_token()

    @staticmethod
    def _request_hash(
        fp: Fingerprinter, item: TokenizeItem, kind: DataKind, fmt: TokenFormat, canon: bytes
    ) -> bytes:
        """HMAC of everything the request asked for, to tell a retry from a reuse."""
        described = json.dumps(
            [
                int(kind),
                int(fmt),
                item.deterministic,
                item.subject,
                sorted(item.metadata.items()),
                item.ttl_seconds,
            ],
            separators=(",", ":"),
        ).encode()
        return fp.digest(b"request", _LEN.pack(len(canon)) + canon + described)

    async def tokenize(
        self, caller: Caller, items: Sequence[TokenizeItem], *, batch: bool
    ) -> list[Tokenized]:
        """Tokenize items atomically, in order; ``batch`` names fields requests[i]."""
        require_scope(caller, SCOPE_TOKENIZE)
        if batch or len(items) != 1:
            self._check_batch_size(len(items), "requests")
        checked: list[tuple[DataKind, TokenFormat, Value]] = []
        violations: list[FieldViolation] = []
        for i, item in enumerate(items):
            try:
                checked.append(self._check_item(item))
            except InvalidArgumentError as exc:
                violations.extend(
                    exc.prefixed(f"requests[{i}]").violations if batch else exc.violations
                )
        if violations:
            raise InvalidArgumentError(violations)
        cvc = [i for i, (kind, _, _) in enumerate(checked) if kind is DataKind.CVC]
        if not cvc:
            return await self._tokenize_stored(caller, items, checked, batch=batch)
        self.ephemeral.check_room(
            caller.tenant, [(items[i].subject, items[i].metadata) for i in cvc]
        )
        stored_at = [i for i in range(len(items)) if i not in set(cvc)]
        results: list[Tokenized | None] = [None] * len(items)
        if stored_at:
            stored = await self._tokenize_stored(
                caller,
                [items[i] for i in stored_at],
                [checked[i] for i in stored_at],
                batch=batch,
                positions=stored_at,
            )
            for i, result in zip(stored_at, stored, strict=True):
                results[i] = result
        # Only once the stored part is durable: the call stays all or nothing.
        for i in cvc:
            item, value = items[i], checked[i][2]
            entry = self.ephemeral.put(
                caller.tenant,
                str(value),
                item.subject,
                dict(item.metadata),
                item.ttl_seconds or self.limits.cvc_ttl_seconds,
                self.limits.cvc_reveals,
            )
            results[i] = Tokenized(
                token=entry.token,
                fingerprint="",  # none for a CVC: it would index a 3-4 digit value
                masked=kinds.mask(DataKind.CVC, str(value)),
                created=True,
                expires_at=entry.expires_at,
            )
        metrics.TOKENS_CREATED.labels(DataKind.CVC.name).inc(len(cvc))
        return [r for r in results if r is not None]

    async def _tokenize_stored(
        self,
        caller: Caller,
        items: Sequence[TokenizeItem],
        checked: list[tuple[DataKind, TokenFormat, Value]],
        *,
        batch: bool,
        positions: Sequence[int] | None = None,
    ) -> list[Tokenized]:
        """Encrypt and store validated items; ``positions`` are their indexes in the call."""
        tenant = caller.tenant
        fp = self._keys.cached_fingerprinter(tenant) or await self._keys.fingerprinter(tenant)
        keyring = self._keys.keyring
        now = self._clock.now()
        primary = keyring.primary
        encryptions = 0
        # Subjects' refs and keys, once per subject of the call (none: nothing to do).
        subjects = {it.subject for it in items if it.subject}
        refs = {subj: fp.digest(b"subject", subj.encode()) for subj in subjects}
        skeys = {subj: await self._subject_key_for_write(tenant, ref) for subj, ref in refs.items()}

        def seal(i: int, token: str) -> TokenRecord:
            nonlocal encryptions
            item = items[i]
            kind, fmt, _ = checked[i]
            canon = canons[i]
            aad = record_aad(tenant, kind, fmt, token, primary.version)
            payload = _encode_payload(canon, item.subject, item.metadata)
            request_hash = (
                self._request_hash(fp, item, kind, fmt, canon) if item.request_id else None
            )
            skey = skeys.get(item.subject) if item.subject else None
            if skey is not None:
                inner = skey.encrypt(payload, subject_layer_aad(tenant, kind, fmt, token))
                payload = _SUBJECT_LAYER + inner
                if request_hash is not None:
                    request_hash = skey.bind(request_hash)
            encryptions += 1
            return TokenRecord(
                token=token,
                tenant=tenant,
                kind=int(kind),
                token_format=int(fmt),
                key_version=primary.version,
                ciphertext=primary.encrypt(payload, aad),
                fingerprint=stored_fps[i],
                deterministic=item.deterministic,
                subject_ref=refs[item.subject] if item.subject else None,
                request_id=item.request_id or None,
                request_hash=request_hash,
                created_at=now,
                expires_at=now + item.ttl_seconds if item.ttl_seconds else None,
            )

        canons = [kinds.canonical_bytes(k, v) for k, _, v in checked]
        fingerprints = [
            fp.digest(_KIND_DOMAINS[k], canon)
            for (k, _, _), canon in zip(checked, canons, strict=True)
        ]
        # What the row stores: a subject's fingerprint is bound to its subject key (an
        # old backup must not let a PAN be searched for by its HMAC once the subject
        # is erased), so deterministic tokens of a subject are unique per subject.
        stored_fps = (
            [
                skeys[it.subject].bind(f) if it.subject else f
                for it, f in zip(items, fingerprints, strict=True)
            ]
            if skeys
            else fingerprints
        )
        records = [seal(i, self._new_token(k, f, v)) for i, (k, f, v) in enumerate(checked)]
        for _attempt in range(self.limits.max_token_attempts):
            outcomes = await self._store.insert_tokens(records, now, {primary.version: encryptions})
            if self._on_encrypt is not None:
                self._on_encrypt(primary.version, encryptions)
            encryptions = 0
            for i, o in enumerate(outcomes):
                if o.status is InsertStatus.REQUEST_REUSED:
                    at = positions[i] if positions is not None else i
                    raise InvalidArgumentError(
                        FieldViolation(
                            f"requests[{at}].request_id" if batch else "request_id",
                            "was already used for a different request",
                        ),
                        reason="REQUEST_ID_REUSED",
                    )
            taken = [i for i, o in enumerate(outcomes) if o.status is InsertStatus.TOKEN_TAKEN]
            if not taken:
                break
            for i in taken:
                kind, fmt, value = checked[i]
                records[i] = seal(i, self._new_token(kind, fmt, value))
        else:
            raise ResourceExhaustedError(
                "no unused token could be drawn in this format; use a format with more free digits",
                reason="TOKEN_SPACE_EXHAUSTED",
            )

        results: list[Tokenized] = []
        created_kinds: list[DataKind] = []
        for i, outcome in enumerate(outcomes):
            kind, _, value = checked[i]
            rec = records[i]
            if outcome.status is InsertStatus.INSERTED:
                created = True
                created_kinds.append(kind)
            else:
                existing = outcome.existing
                if existing is None:  # pragma: no cover - store contract
                    raise InternalError("store answered without the existing token")
                rec, created = existing, False
            results.append(
                Tokenized(
                    token=rec.token,
                    # The tenant-wide fingerprint (the same value, hit or not).
                    fingerprint=Fingerprinter.encode(fingerprints[i]),
                    masked=kinds.mask(kind, value),
                    created=created,
                    expires_at=rec.expires_at,
                )
            )
        for kind, n in Counter(created_kinds).items():
            metrics.TOKENS_CREATED.labels(kind.name).inc(n)
        return results

    # -- reading -----------------------------------------------------------------

    async def _load(
        self, caller: Caller, tokens: Sequence[str], field_name: str
    ) -> list[TokenRecord]:
        """Live rows of the caller's tenant, in order; NotFound for any other."""
        batch = field_name == "tokens"
        violations = []
        for i, token in enumerate(tokens):
            try:
                kinds.validate_token_string(token, f"tokens[{i}]" if batch else field_name)
            except InvalidArgumentError as exc:
                violations.extend(exc.violations)
        if violations:
            raise InvalidArgumentError(violations)
        rows = await self._store.get_tokens(tokens)
        now = self._clock.now()
        found: list[TokenRecord] = []
        for i, row in enumerate(rows):
            if (
                row is None
                or row.tenant != caller.tenant
                or (not row.live(now) and not await self._held(row))
            ):
                where = f" (tokens[{i}])" if batch else ""
                raise NotFoundError(f"token not found{where}", reason="TOKEN_NOT_FOUND")
            found.append(row)
        keyring = self._keys.keyring
        if any(not keyring.has(row.key_version) for row in found):
            # A version newer than this process's keyring (a rotation, then a rewrap,
            # before the periodic refresh): reload now rather than fail the read.
            await self._keys.load()
        return found

    async def _held(self, row: TokenRecord) -> bool:
        """A subject under legal hold does not expire (its rows stay readable)."""
        return row.subject_ref is not None and await self._store.subject_held(
            row.tenant, row.subject_ref
        )

    async def _subject_key_for_write(self, tenant: str, subject_ref: bytes) -> SubjectKey:
        if self.subject_keys is None:
            raise FailedPreconditionError(
                "this vault has no subject-key store", reason="SUBJECT_KEYS_UNAVAILABLE"
            )
        return await self.subject_keys.for_write(tenant, subject_ref)

    async def subject_keys_for(self, rows: Sequence[TokenRecord]) -> dict[bytes, SubjectKey | None]:
        """The subject keys the rows need (by subject_ref; None where destroyed)."""
        refs = {(r.tenant, r.subject_ref) for r in rows if r.subject_ref is not None}
        if not refs:
            return _NO_SUBJECT_KEYS
        if self.subject_keys is None:
            return dict.fromkeys((ref for _, ref in refs), None)
        return {ref: await self.subject_keys.for_read(tenant, ref) for tenant, ref in refs}

    def open_record(
        self, row: TokenRecord, subject_keys: Mapping[bytes, SubjectKey | None]
    ) -> Opened:
        """Decrypt a row: the data-key layer, then the subject-key layer if it has one. A
        row whose subject key was destroyed (an erased subject) is NOT_FOUND."""
        kind = _KINDS[row.kind]
        aad = record_aad(row.tenant, row.kind, row.token_format, row.token, row.key_version)
        payload = self._keys.keyring.key(row.key_version).decrypt(row.ciphertext, aad)
        if payload[:1] == _SUBJECT_LAYER:
            skey = subject_keys.get(row.subject_ref) if row.subject_ref is not None else None
            if skey is None:
                raise NotFoundError("token not found", reason="TOKEN_NOT_FOUND")
            payload = skey.decrypt(
                payload[1:], subject_layer_aad(row.tenant, row.kind, row.token_format, row.token)
            )
        canon, subject, metadata = _decode_payload(payload)
        return Opened(kind, kinds.value_from_canonical(kind, canon), subject, metadata)

    # -- audit -------------------------------------------------------------------

    async def _audit_refusal(
        self,
        caller: Caller,
        action: str,
        tokens: Sequence[str],
        purpose: str,
        request: RequestContext,
        exc: VaultError,
    ) -> None:
        """One record of a refused or failed call (best effort: it already fails)."""
        if self._audit is None:
            return
        named = tuple(
            t if _RANDOM_TOKEN.fullmatch(t) else _NOT_RECORDED
            for t in tokens[: self.limits.max_batch]
        )
        event = AuditEvent(
            self._clock.now(),
            caller.name,
            caller.tenant,
            action,
            named,
            purpose if len(purpose) <= self.limits.max_purpose_chars else "",
            OUTCOME_DENIED if isinstance(exc, _DENIED) else OUTCOME_ERROR,
            exc.reason,
            request.request_id,
            request.peer,
            {"token_count": str(len(tokens))},
        )
        try:
            await self._audit.record([event])
        except Exception as audit_exc:  # noqa: BLE001 - the call fails with its own error
            log.error("audit of a refused call failed: %s", type(audit_exc).__name__)
        else:
            exc.audited = True

    async def _audit_done(self, events: list[AuditEvent]) -> None:
        """Make the records of a completed call durable, or fail the call (fail closed)."""
        if self._audit is None:
            return
        try:
            await self._audit.record(events)
        except Exception as exc:  # noqa: BLE001 - whatever failed, nothing leaves unaudited
            log.error("audit append failed: %s", type(exc).__name__)
            raise UnavailableError(
                "the audit trail cannot be written; retry later", reason="AUDIT_UNAVAILABLE"
            ) from None

    # -- reveal ------------------------------------------------------------------

    async def detokenize(
        self,
        caller: Caller,
        tokens: Sequence[str],
        purpose: str,
        *,
        batch: bool,
        request: RequestContext | None = None,
    ) -> list[Revealed]:
        """Values of the tokens, in order; each reveal is audited (one record per token)
        before anything is returned."""
        ctx = request or _NO_CONTEXT
        try:
            require_scope(caller, SCOPE_DETOKENIZE)
            if batch:
                self._check_batch_size(len(tokens), "tokens")
            self._check_purpose(purpose)
            # Before any lookup, like the scope: a limited caller learns nothing more.
            self._limiter.take(caller, len(tokens))
            # CVCs in memory are spent now (no await in between), and given back below
            # if the call reveals nothing after all.
            held = {
                i: entry
                for i, token in enumerate(tokens)
                if (entry := self.ephemeral.find(caller.tenant, token)) is not None
            }
            if held and not caller.may_reveal(DataKind.CVC.name):
                raise PermissionDeniedError(
                    "the caller may not reveal this data kind", reason="KIND_NOT_ALLOWED"
                )
            taken = {i: self.ephemeral.take(entry) for i, entry in held.items()}
        except VaultError as exc:
            await self._audit_refusal(caller, ACTION_REVEAL, tokens, purpose, ctx, exc)
            raise
        try:
            out = await self._reveal(caller, tokens, held, taken, batch=batch)
        except VaultError as exc:
            self._give_back(held, taken)
            await self._audit_refusal(caller, ACTION_REVEAL, tokens, purpose, ctx, exc)
            raise
        now = self._clock.now()
        detail = {"batch_size": str(len(out))} if batch else {}
        try:
            await self._audit_reveals(caller, out, purpose, ctx, now, detail)
        except BaseException:
            self._give_back(held, taken)
            raise
        for kind, n in Counter(r.kind for r in out).items():
            metrics.TOKENS_REVEALED.labels(kind.name).inc(n)
        return out

    async def _reveal(
        self,
        caller: Caller,
        tokens: Sequence[str],
        held: dict[int, EphemeralEntry],
        taken: dict[int, str],
        *,
        batch: bool,
    ) -> list[Revealed]:
        """Values in order: CVCs from memory, the rest from the store."""
        stored = [t for i, t in enumerate(tokens) if i not in held]
        loaded = await self._load(caller, stored, "tokens" if batch else "token") if stored else []
        skeys = await self.subject_keys_for(loaded)
        rows = iter(loaded)
        out = []
        for i, token in enumerate(tokens):
            if i in held:
                entry = held[i]
                out.append(
                    Revealed(token, DataKind.CVC, taken[i], dict(entry.metadata), entry.subject)
                )
                continue
            row = next(rows)
            if not caller.may_reveal(_KINDS[row.kind].name):
                raise PermissionDeniedError(
                    "the caller may not reveal this data kind", reason="KIND_NOT_ALLOWED"
                )
            opened = self.open_record(row, skeys)
            out.append(
                Revealed(row.token, opened.kind, opened.value, opened.metadata, opened.subject)
            )
        return out

    def check_reveal_policy(self, caller: Caller, rows: Sequence[TokenRecord]) -> None:
        """The caller's reveal policy for values shown other than by Detokenize (a
        subject's export): its data kinds, then its reveal rate (one per value)."""
        for row in rows:
            if not caller.may_reveal(_KINDS[row.kind].name):
                raise PermissionDeniedError(
                    "the caller may not reveal this data kind", reason="KIND_NOT_ALLOWED"
                )
        if rows:
            self._limiter.take(caller, len(rows))

    def _give_back(self, held: dict[int, EphemeralEntry], taken: dict[int, str]) -> None:
        for i, entry in held.items():
            self.ephemeral.give_back(entry, taken[i])

    async def _audit_reveals(
        self,
        caller: Caller,
        out: list[Revealed],
        purpose: str,
        ctx: RequestContext,
        now: float,
        detail: dict[str, str],
    ) -> None:
        await self._audit_done(
            [
                AuditEvent(
                    now,
                    caller.name,
                    caller.tenant,
                    ACTION_REVEAL,
                    (r.token,),
                    purpose,
                    OUTCOME_OK,
                    "",
                    ctx.request_id,
                    ctx.peer,
                    {**detail, "kind": r.kind.name},
                )
                for r in out
            ]
        )

    async def get_token(self, caller: Caller, token: str) -> TokenInfo:
        require_any_scope(caller, SCOPE_REVEAL_MASKED, SCOPE_DETOKENIZE)
        entry = self.ephemeral.find(caller.tenant, token)
        if entry is not None:
            return TokenInfo(
                token=token,
                kind=DataKind.CVC,
                token_format=TokenFormat.RANDOM,
                masked=kinds.mask(DataKind.CVC, ""),
                fingerprint="",
                subject=entry.subject,
                metadata=dict(entry.metadata),
                deterministic=False,
                created_at=entry.created_at,
                expires_at=entry.expires_at,
                key_version=0,  # never encrypted: held in memory only
            )
        (row,) = await self._load(caller, [token], "token")
        opened = self.open_record(row, await self.subject_keys_for([row]))
        kind, value = opened.kind, opened.value
        fingerprint = row.fingerprint
        if row.subject_ref is not None:
            # A subject's row stores its fingerprint bound to the subject key; the caller
            # sees the tenant-wide one, as tokenize returned it.
            fp = await self._keys.fingerprinter(row.tenant)
            fingerprint = fp.digest(_KIND_DOMAINS[kind], kinds.canonical_bytes(kind, value))
        return TokenInfo(
            token=row.token,
            kind=kind,
            token_format=TokenFormat(row.token_format),
            masked=kinds.mask(kind, value),
            fingerprint=Fingerprinter.encode(fingerprint),
            subject=opened.subject,
            metadata=opened.metadata,
            deterministic=row.deterministic,
            created_at=row.created_at,
            expires_at=row.expires_at,
            key_version=row.key_version,
        )

    async def delete_token(
        self, caller: Caller, token: str, *, request: RequestContext | None = None
    ) -> None:
        ctx = request or _NO_CONTEXT
        try:
            require_scope(caller, SCOPE_TOKENIZE)
            if not self.ephemeral.remove(caller.tenant, token):
                # Expired but not yet purged counts as gone, as for every other read.
                await self._load(caller, [token], "token")
                if not await self._store.delete_token(caller.tenant, token):
                    raise NotFoundError("token not found", reason="TOKEN_NOT_FOUND")
        except VaultError as exc:
            await self._audit_refusal(caller, ACTION_DELETE, [token], "", ctx, exc)
            raise
        event = AuditEvent(
            self._clock.now(),
            caller.name,
            caller.tenant,
            ACTION_DELETE,
            (token,),
            request_id=ctx.request_id,
            peer=ctx.peer,
        )
        await self._audit_done([event])

    # -- correction ------------------------------------------------------------------

    async def update_token(
        self,
        caller: Caller,
        token: str,
        value: Value | None,
        metadata: Mapping[str, str] | None,
        *,
        request: RequestContext | None = None,
    ) -> Tokenized:
        """Correct the value of a stored token in place (the token stays the same): new
        ciphertext and fingerprint; ``metadata`` replaces the labels unless None."""
        ctx = request or _NO_CONTEXT
        try:
            require_scope(caller, SCOPE_TOKENIZE)
            kinds.validate_token_string(token, "token")
            if self.ephemeral.find(caller.tenant, token) is not None:
                raise FailedPreconditionError(
                    "a CVC cannot be corrected: tokenize the new one", reason="CVC_NOT_UPDATABLE"
                )
            for _attempt in range(_UPDATE_ATTEMPTS):
                result = await self._update_once(caller, token, value, metadata)
                if result is not None:
                    break
            else:
                raise UnavailableError(
                    "the token kept changing during the update; retry", reason="UPDATE_CONFLICT"
                )
        except VaultError as exc:
            await self._audit_refusal(caller, ACTION_UPDATE, [token], "", ctx, exc)
            raise
        tokenized, kind = result
        event = AuditEvent(
            self._clock.now(),
            caller.name,
            caller.tenant,
            ACTION_UPDATE,
            (token,),
            request_id=ctx.request_id,
            peer=ctx.peer,
            detail={"kind": kind.name, "metadata_replaced": str(metadata is not None).lower()},
        )
        await self._audit_done([event])
        return tokenized

    def _check_correction(
        self,
        kind: DataKind,
        fmt: TokenFormat,
        token: str,
        value: Value | None,
        metadata: Mapping[str, str] | None,
    ) -> Value:
        """The new value, normalised for the token's kind and shape; all violations at once."""
        violations: list[FieldViolation] = []
        normal: Value | None = None
        if value is None:
            field_name = "address" if kind in ADDRESS_KINDS else "text"
            violations.append(FieldViolation(field_name, "is required"))
        else:
            field_name = "text" if isinstance(value, str) else "address"
            try:
                normal = kinds.normalize(kind, value, field_name)
            except InvalidArgumentError as exc:
                violations.extend(exc.violations)
        if metadata is not None:
            violations.extend(self._check_extras(TokenizeItem(int(kind), None, metadata=metadata)))
        if violations or normal is None:
            raise InvalidArgumentError(violations)
        if kind is DataKind.PAN and fmt in _PAN_FORMATS and isinstance(normal, str):
            # The token shows the PAN's length and last four (and BIN): a new PAN must
            # match them, or the token would describe another card.
            head = 6 if fmt is TokenFormat.PAN_BIN_LAST4 else 0
            if (
                len(normal) != len(token)
                or normal[-4:] != token[-4:]
                or normal[:head] != token[:head]
            ):
                raise InvalidArgumentError(
                    FieldViolation(
                        "text",
                        "must keep the length and the digits the token shows "
                        "(last four, and the BIN for PAN_BIN_LAST4): tokenize a new card",
                    ),
                    reason="TOKEN_SHAPE_MISMATCH",
                )
        return normal

    async def _update_once(
        self,
        caller: Caller,
        token: str,
        value: Value | None,
        metadata: Mapping[str, str] | None,
    ) -> tuple[Tokenized, DataKind] | None:
        """One compare-and-set attempt; None when the row changed meanwhile."""
        (row,) = await self._load(caller, [token], "token")
        kind, fmt = _KINDS[row.kind], TokenFormat(row.token_format)
        normal = self._check_correction(kind, fmt, token, value, metadata)
        skeys = await self.subject_keys_for([row])
        old = self.open_record(row, skeys)
        canon = kinds.canonical_bytes(kind, normal)
        fp = await self._keys.fingerprinter(row.tenant)
        fingerprint = fp.digest(_KIND_DOMAINS[kind], canon)
        payload = _encode_payload(
            canon, old.subject, dict(metadata) if metadata is not None else old.metadata
        )
        stored_fp = fingerprint
        if row.subject_ref is not None:
            skey = skeys.get(row.subject_ref) or await self._subject_key_for_write(
                row.tenant, row.subject_ref
            )
            payload = _SUBJECT_LAYER + skey.encrypt(
                payload, subject_layer_aad(row.tenant, row.kind, row.token_format, token)
            )
            stored_fp = skey.bind(fingerprint)
        primary = self._keys.keyring.primary
        aad = record_aad(row.tenant, row.kind, row.token_format, token, primary.version)
        status = await self._store.update_token(
            TokenUpdate(
                token=token,
                tenant=row.tenant,
                old_version=row.key_version,
                old_ciphertext=row.ciphertext,
                new_version=primary.version,
                new_ciphertext=primary.encrypt(payload, aad),
                new_fingerprint=stored_fp,
                now=self._clock.now(),
            )
        )
        if status is UpdateStatus.CHANGED:
            return None
        if status is UpdateStatus.DETERMINISTIC_EXISTS:
            raise AlreadyExistsError(
                "another deterministic token already holds this value",
                reason="DETERMINISTIC_COLLISION",
            )
        tokenized = Tokenized(
            token=token,
            fingerprint=Fingerprinter.encode(fingerprint),
            masked=kinds.mask(kind, normal),
            created=False,
            expires_at=row.expires_at,
        )
        return tokenized, kind

    async def purge_expired(self, limit: int = 1000) -> int:
        """Delete expired tokens, up to ``limit`` per store transaction, until none is left
        (and drop expired CVCs from memory)."""
        total = self.ephemeral.purge()
        while True:
            n = await self._store.purge_expired(self._clock.now(), limit)
            total += n
            if n < limit:
                break
        if total:
            metrics.TOKENS_PURGED.inc(total)
        return total
