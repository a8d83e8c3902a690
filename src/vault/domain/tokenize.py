"""Tokenize: validated values sealed and stored (or, for a CVC, held in memory), in
order, all or nothing. PAN-shaped tokens come from an injected generator (the CSPRNG by
default) and are redrawn while the store says they are taken.

Tokenize must not be an oracle over stored values (issue 13): the fingerprint is
returned only with the ``fingerprint`` scope, deterministic tokens need the
``tokenize-deterministic`` scope, each caller has a tokenize budget counted in items, its
volume is audited per window, and a stored token lives at least ``min_ttl_seconds``."""

from __future__ import annotations

import json
import struct
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from vault import metrics
from vault.audit.volume import TokenizeVolume
from vault.auth.policy import (
    SCOPE_TOKENIZE,
    SCOPE_TOKENIZE_DETERMINISTIC,
    Caller,
    shown_fingerprint,
)
from vault.auth.policy import require as require_scope
from vault.auth.ratelimit import TokenizeBudgetError, TokenizeLimiter
from vault.clock import Clock
from vault.crypto.keyring import Fingerprinter
from vault.crypto.subject import SubjectKey
from vault.domain import kinds
from vault.domain.codec import RecordCodec, encode_payload
from vault.domain.cvc import CvcHandling
from vault.domain.keys import KeyMaterial
from vault.domain.model import DataKind, TokenFormat
from vault.domain.results import Tokenized
from vault.domain.validation import Checked, TokenizeItem, Validator, uses_pan_token
from vault.errors import (
    FieldViolation,
    InternalError,
    InvalidArgumentError,
    PermissionDeniedError,
    ResourceExhaustedError,
)
from vault.storage.base import InsertOutcome, InsertStatus, TokenRecord, TokenStore

__all__ = ["DEFAULT_MIN_TTL", "KIND_DOMAINS", "PanTokenGenerator", "Tokenize", "TokenizeRules"]

# Draws a PAN-shaped token for a normalised PAN in a PAN format (kinds.new_pan_token:
# the CSPRNG, last four (and BIN) kept, Luhn-invalid).
PanTokenGenerator = Callable[[str, TokenFormat], str]
# HMAC domain of a value's fingerprint: the kind, so equal text of two kinds differs.
KIND_DOMAINS = {k: b"kind:%d" % k for k in DataKind}
_LEN = struct.Struct(">I")
DEFAULT_MIN_TTL = 60.0  # seconds a stored (non-CVC) token lives at least (config min_ttl)


@dataclass(frozen=True, slots=True)
class TokenizeRules:
    """What bounds a tokenize caller. The composition root passes the configured ones
    (min_ttl, tokenize_rate, tokenize_burst); these defaults, no minimum TTL and no
    budget, are for the in-process benchmark and unit tests only."""

    min_ttl_seconds: float = 0.0  # a smaller ttl on a stored token is INVALID_ARGUMENT
    rate: float = 0.0  # items per second a caller earns back (its own rate overrides)
    burst: int = 0  # items at once (its own burst overrides); 0 = max(1, rate)


@dataclass(slots=True)
class _Batch:
    """The stored part of one call, validated, with what every seal of it needs."""

    tenant: str
    items: Sequence[TokenizeItem]
    checked: Sequence[Checked]
    fp: Fingerprinter
    canons: list[bytes]
    fingerprints: list[bytes]  # tenant-wide: what the caller sees
    stored_fps: list[bytes]  # what the rows store (a subject's bound to its key)
    refs: dict[str, bytes]  # subject -> subject_ref
    skeys: dict[str, SubjectKey]  # subject -> its key
    now: float


def _request_hash(fp: Fingerprinter, item: TokenizeItem, checked: Checked, canon: bytes) -> bytes:
    """HMAC of everything the request asked for, to tell a retry from a reuse."""
    kind, fmt, _ = checked
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


class Tokenize:
    """The Tokenize and BatchTokenize use case."""

    def __init__(
        self,
        tokens: TokenStore,
        keys: KeyMaterial,
        codec: RecordCodec,
        validator: Validator,
        cvc: CvcHandling,
        clock: Clock,
        *,
        on_encrypt: Callable[[int, int], None] | None = None,
        new_pan_token: PanTokenGenerator = kinds.new_pan_token,
        rules: TokenizeRules | None = None,
        volume: TokenizeVolume | None = None,
    ) -> None:
        self._tokens = tokens
        self._keys = keys
        self._codec = codec
        self._validator = validator
        self._cvc = cvc
        self._clock = clock
        # Told (key version, count) after each store write of new records: the key
        # auto-rotation notices the encryption limit between its checks.
        self._on_encrypt = on_encrypt
        self._new_pan_token = new_pan_token
        self._rules = rules or TokenizeRules()
        self.budget = TokenizeLimiter(clock, self._rules.rate, self._rules.burst)
        # Tokenize volume per caller and window into the audit trail (None: not counted).
        self.volume = volume or TokenizeVolume(None, clock)

    def __repr__(self) -> str:
        return "Tokenize()"

    def _new_token(self, checked: Checked) -> str:
        kind, fmt, value = checked
        if uses_pan_token(kind, fmt, value):
            return self._new_pan_token(str(value), fmt)
        return kinds.new_random_token()

    def _check(self, items: Sequence[TokenizeItem], *, batch: bool) -> list[Checked]:
        if batch or len(items) != 1:
            self._validator.check_batch_size(len(items), "requests")
        checked: list[Checked] = []
        violations: list[FieldViolation] = []
        min_ttl = self._rules.min_ttl_seconds
        for i, item in enumerate(items):
            try:
                checked.append(self._validator.check_item(item))
            except InvalidArgumentError as exc:
                violations.extend(
                    exc.prefixed(f"requests[{i}]").violations if batch else exc.violations
                )
            # CVCs are exempt: they live in memory for minutes by design.
            ttl = item.ttl_seconds
            if ttl is not None and 0 < ttl < min_ttl and item.kind != DataKind.CVC:
                violations.append(
                    FieldViolation(
                        f"requests[{i}].ttl" if batch else "ttl",
                        f"must be at least {min_ttl:g} seconds",
                    )
                )
        if violations:
            raise InvalidArgumentError(violations)
        return checked

    async def tokenize(
        self, caller: Caller, items: Sequence[TokenizeItem], *, batch: bool
    ) -> list[Tokenized]:
        """Tokenize items atomically, in order; ``batch`` names fields requests[i]."""
        require_scope(caller, SCOPE_TOKENIZE)
        _check_deterministic(caller, items, batch=batch)
        checked = self._check(items, batch=batch)
        self._spend(caller, len(items))
        cvc = [i for i, (kind, _, _) in enumerate(checked) if kind is DataKind.CVC]
        if not cvc:
            return await self._store(caller, items, checked, batch=batch)
        self._cvc.memory.check_room(
            caller.tenant, [(items[i].subject, items[i].metadata) for i in cvc]
        )
        stored_at = [i for i in range(len(items)) if i not in set(cvc)]
        results: list[Tokenized | None] = [None] * len(items)
        if stored_at:
            stored = await self._store(
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
            results[i] = self._cvc.hold(caller, items[i], str(checked[i][2]))
        metrics.TOKENS_CREATED.labels(DataKind.CVC.name).inc(len(cvc))
        return [r for r in results if r is not None]

    def _spend(self, caller: Caller, items: int) -> None:
        """Spend ``items`` of the caller's budget (counted, metered and audited per window
        either way) or raise TokenizeBudgetError: RESOURCE_EXHAUSTED with RetryInfo."""
        try:
            self.budget.take(caller, items)
        except TokenizeBudgetError:
            metrics.TOKENIZE_REFUSED.labels(caller.name).inc(items)
            self.volume.refused(caller.name, caller.tenant, items)
            raise
        # The refusal counter is touched too, so it is exported at 0 from the first call
        # (an alert's increase() then sees the first refusal).
        metrics.TOKENIZE_REFUSED.labels(caller.name)
        metrics.TOKENIZE_ITEMS.labels(caller.name).inc(items)
        self.volume.tokenized(caller.name, caller.tenant, items)

    async def _prepare(
        self, tenant: str, items: Sequence[TokenizeItem], checked: Sequence[Checked]
    ) -> _Batch:
        fp = self._keys.cached_fingerprinter(tenant) or await self._keys.fingerprinter(tenant)
        # Subjects' refs and keys, once per subject of the call (none: nothing to do).
        subjects = {it.subject for it in items if it.subject}
        refs = {subj: fp.digest(b"subject", subj.encode()) for subj in subjects}
        skeys = {
            subj: await self._codec.subject_key_for_write(tenant, ref) for subj, ref in refs.items()
        }
        canons = [kinds.canonical_bytes(k, v) for k, _, v in checked]
        fingerprints = [
            fp.digest(KIND_DOMAINS[k], canon)
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
        now = self._clock.now()
        return _Batch(
            tenant, items, checked, fp, canons, fingerprints, stored_fps, refs, skeys, now
        )

    def _seal(self, b: _Batch, i: int) -> TokenRecord:
        """Item ``i`` of the batch under a newly drawn token."""
        item, checked, canon = b.items[i], b.checked[i], b.canons[i]
        kind, fmt, _ = checked
        token = self._new_token(checked)
        request_hash = _request_hash(b.fp, item, checked, canon) if item.request_id else None
        skey = b.skeys.get(item.subject) if item.subject else None
        if skey is not None and request_hash is not None:
            request_hash = skey.bind(request_hash)
        payload = encode_payload(canon, item.subject, item.metadata)
        sealed = self._codec.seal(b.tenant, int(kind), int(fmt), token, payload, skey)
        return TokenRecord(
            token=token,
            tenant=b.tenant,
            kind=int(kind),
            token_format=int(fmt),
            key_version=sealed.key_version,
            ciphertext=sealed.ciphertext,
            fingerprint=b.stored_fps[i],
            deterministic=item.deterministic,
            subject_ref=b.refs[item.subject] if item.subject else None,
            request_id=item.request_id or None,
            request_hash=request_hash,
            created_at=b.now,
            expires_at=b.now + item.ttl_seconds if item.ttl_seconds else None,
        )

    async def _store(
        self,
        caller: Caller,
        items: Sequence[TokenizeItem],
        checked: Sequence[Checked],
        *,
        batch: bool,
        positions: Sequence[int] | None = None,
    ) -> list[Tokenized]:
        """Encrypt and store validated items; ``positions`` are their indexes in the call."""
        b = await self._prepare(caller.tenant, items, checked)
        records = [self._seal(b, i) for i in range(len(items))]
        outcomes = await self._insert(b, records, batch=batch, positions=positions)
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
                    # The tenant-wide fingerprint (the same value, hit or not), to a caller
                    # with the fingerprint scope only.
                    fingerprint=shown_fingerprint(caller, Fingerprinter.encode(b.fingerprints[i])),
                    masked=kinds.mask(kind, value),
                    created=created,
                    expires_at=rec.expires_at,
                )
            )
        for kind, n in Counter(created_kinds).items():
            metrics.TOKENS_CREATED.labels(kind.name).inc(n)
        return results

    async def _insert(
        self,
        b: _Batch,
        records: list[TokenRecord],
        *,
        batch: bool,
        positions: Sequence[int] | None,
    ) -> list[InsertOutcome]:
        """Insert the records, redrawing taken tokens up to the attempt limit (``records``
        is updated in place to what was stored)."""
        # Encryptions per key version of the records sealed since the last write.
        encryptions = Counter(r.key_version for r in records)
        for _attempt in range(self._validator.limits.max_token_attempts):
            outcomes = await self._tokens.insert_tokens(records, b.now, dict(encryptions))
            if self._on_encrypt is not None:
                for version, n in encryptions.items():
                    self._on_encrypt(version, n)
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
                return outcomes
            for i in taken:
                records[i] = self._seal(b, i)
            encryptions = Counter(records[i].key_version for i in taken)
        raise ResourceExhaustedError(
            "no unused token could be drawn in this format; use a format with more free digits",
            reason="TOKEN_SPACE_EXHAUSTED",
        )


def _check_deterministic(caller: Caller, items: Sequence[TokenizeItem], *, batch: bool) -> None:
    """Deterministic tokens answer "this value is stored" (``created: false`` with the
    known token): a caller needs the tokenize-deterministic scope to ask for one."""
    if SCOPE_TOKENIZE_DETERMINISTIC in caller.scopes:
        return
    for i, item in enumerate(items):
        if item.deterministic:
            field = f"requests[{i}].deterministic" if batch else "deterministic"
            raise PermissionDeniedError(
                f"{field}: the caller lacks the {SCOPE_TOKENIZE_DETERMINISTIC} scope",
                reason="DETERMINISTIC_NOT_ALLOWED",
            )
