"""The Store protocol: single-purpose storage primitives over opaque bytes.

The store never sees plaintext: values arrive encrypted, fingerprints and subject
references arrive as HMACs. Combined operations (tokenize = encrypt + insert + retry)
live in the domain layer.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from vault.storage.route_store import RouteStore

__all__ = [
    "AUDIT_GENESIS_MAC",
    "AuditHead",
    "AuditRow",
    "AuditSeal",
    "CallerRow",
    "CommitObserver",
    "EraseOutcome",
    "InsertOutcome",
    "InsertStatus",
    "KeyVersionRow",
    "RetentionCounts",
    "RetentionPolicy",
    "RetentionPurges",
    "RetentionStats",
    "RetireOutcome",
    "RewrapProgressRow",
    "RewrapRow",
    "RewrapUpdate",
    "ShareSchemeRow",
    "Store",
    "SubjectKeyStore",
    "TokenRecord",
    "TokenUpdate",
    "UpdateStatus",
    "WrappedKeyKind",
    "WrappedKeyRow",
    "audit_content",
    "audit_detail_bytes",
    "audit_texts_bytes",
    "audit_tokens_bytes",
]


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """One tokenized value as stored."""

    token: str  # the token handed out; unique in the store
    tenant: str  # owning tenant; other tenants never see the row
    kind: int  # DataKind number
    token_format: int  # TokenFormat number (resolved, never UNSPECIFIED)
    key_version: int  # data-key version that encrypted `ciphertext`
    ciphertext: bytes  # nonce || AES-GCM(value, metadata, subject) || tag
    fingerprint: bytes  # HMAC-SHA-256 of the value under the tenant fingerprint key
    deterministic: bool  # created with deterministic=true (unique per tenant/kind/format/fp)
    subject_ref: bytes | None  # HMAC of the subject id, for subject lookups; None if none
    request_id: str | None  # caller's idempotency key, unique per tenant
    request_hash: bytes | None  # HMAC of the request that used request_id
    created_at: float  # unix seconds
    expires_at: float | None  # unix seconds; None = never

    def __repr__(self) -> str:
        return f"TokenRecord(kind={self.kind}, key_version={self.key_version})"

    def live(self, now: float) -> bool:
        return self.expires_at is None or self.expires_at > now


class InsertStatus(enum.Enum):
    INSERTED = "inserted"
    DETERMINISTIC_EXISTS = "deterministic_exists"  # `existing` is the live earlier token
    REQUEST_EXISTS = "request_exists"  # `existing` is the token of the earlier request
    # The request id was used before for a different request (request_hash differs);
    # nothing of the call is inserted.
    REQUEST_REUSED = "request_reused"
    TOKEN_TAKEN = "token_taken"  # the token is in use: draw another and retry
    ABORTED = "aborted"  # not inserted because another record of the same call was taken


@dataclass(frozen=True, slots=True)
class InsertOutcome:
    status: InsertStatus
    existing: TokenRecord | None = None


@dataclass(frozen=True, slots=True)
class KeyVersionRow:
    version: int  # data-key version number, named by every record it encrypted
    state: str  # primary | active | retired
    wrapped_key: bytes | None  # the DEK wrapped by the master key; None once retired
    kek_id: str  # which master key wrapped it
    created_at: float  # unix seconds
    encryptions: int  # encryptions done under it so far (GCM random-nonce budget)

    def __repr__(self) -> str:
        return f"KeyVersionRow(version={self.version}, state={self.state})"


class RetireOutcome(enum.Enum):
    RETIRED = "retired"  # state retired, wrapped key destroyed
    UNKNOWN = "unknown"  # no such version
    PRIMARY = "primary"  # the primary is never retired
    ALREADY_RETIRED = "already_retired"
    IN_USE = "in_use"  # records still name it


@dataclass(frozen=True, slots=True)
class RewrapRow:
    """A stored record to re-encrypt, with its insertion position (the scan cursor)."""

    position: int
    record: TokenRecord


@dataclass(frozen=True, slots=True)
class RewrapUpdate:
    """A compare-and-set: replace (old_version, old_ciphertext) of the token's row."""

    token: str
    old_version: int
    old_ciphertext: bytes
    new_version: int
    new_ciphertext: bytes

    def __repr__(self) -> str:
        return f"RewrapUpdate(v{self.old_version}->v{self.new_version})"


class WrappedKeyKind(enum.StrEnum):
    """Which kind of wrapped key a WrappedKeyRow is (each lives in its own place)."""

    DATA_KEY = "data_key"  # a data-key version; name = the version number
    FINGERPRINT_KEY = "fingerprint_key"  # a tenant's fingerprint key; name = the tenant
    SERVICE_KEY = "service_key"  # a vault-wide key (audit key, ...); name = its name


@dataclass(frozen=True, slots=True)
class WrappedKeyRow:
    """One key wrapped by the master key, wherever it is stored (master-key rotation)."""

    kind: WrappedKeyKind
    name: str  # version number (data keys), tenant (fingerprint keys), key name (service)
    wrapped_key: bytes  # the key wrapped by the master key named by kek_id
    kek_id: str  # which master key wrapped it

    def __repr__(self) -> str:
        return f"WrappedKeyRow({self.kind}, {self.name!r}, kek={self.kek_id})"


@dataclass(frozen=True, slots=True)
class ShareSchemeRow:
    """The non-secret facts of a master key split into custodian shares."""

    kek_id: str  # public name of the master key the shares rebuild
    threshold: int  # K: shares needed
    share_count: int  # N: shares handed out
    verifiers: tuple[bytes, ...]  # SHA-256 of share i+1 at position i (N of them)
    created_at: float  # unix seconds

    def __repr__(self) -> str:
        return f"ShareSchemeRow({self.threshold} of {self.share_count}, kek={self.kek_id})"


@dataclass(frozen=True, slots=True)
class RewrapProgressRow:
    """The latest rewrap run's progress, as stored (one row per store)."""

    holder: str  # random id of the run (its rewrap lease holder)
    primary_version: int  # the version records are moved to
    batch_size: int  # records per batch asked for
    rate: float  # records per second it was limited to; 0 = no limit
    started_at: float  # unix seconds
    last_batch_at: float  # unix seconds of the last progress (a batch, or the start)
    finished_at: float | None  # unix seconds it completed; None while running or if killed
    batches: int  # batches done
    rewrapped: int  # rows moved to primary_version
    skipped: int  # rows changed or deleted meanwhile
    failed: int  # rows that did not decrypt
    remaining: int  # rows still on older versions (estimate while running)
    # Read only (ignored by put): expiry of the rewrap lease if this run holds it, else None.
    lease_expires_at: float | None = None


@dataclass(frozen=True, slots=True)
class CallerRow:
    name: str  # unique caller name chosen by ops
    tenant: str  # tenant whose tokens the caller works with
    scopes: tuple[str, ...]  # what the caller may do (default deny)
    key_id: str | None  # public half of its API key, for lookup
    key_hash: bytes | None  # SHA-256 of the secret half; the key itself is never stored
    created_at: float
    expires_at: float | None
    revoked_at: float | None
    cert_identity: str | None = None  # mTLS identity (SAN URI or subject CN), if bound
    # DataKind names it may reveal (on top of the `detokenize` scope); () = every kind
    reveal_kinds: tuple[str, ...] = ()
    reveal_rate: float = 0.0  # reveals per second; 0 = unlimited
    reveal_burst: int = 0  # token-bucket size; 0 = max(1, rate)
    # Tokenize budget in items per second and at once; None = the server's configured
    # default (tokenize_rate / tokenize_burst); rate 0 = no budget.
    tokenize_rate: float | None = None
    tokenize_burst: int | None = None

    def __repr__(self) -> str:
        return f"CallerRow(name={self.name!r}, tenant={self.tenant!r})"


@dataclass(frozen=True, slots=True)
class EraseOutcome:
    held: bool  # the subject is under legal hold: nothing was erased
    erased: int  # token rows removed


@dataclass(frozen=True, slots=True)
class TokenUpdate:
    """A compare-and-set correction of one token's value: replaces the row's ciphertext,
    fingerprint and key version only if they are still (old_version, old_ciphertext)."""

    token: str
    tenant: str
    old_version: int
    old_ciphertext: bytes
    new_version: int
    new_ciphertext: bytes
    new_fingerprint: bytes
    now: float  # the caller's clock: a colliding row expired at it is no longer live

    def __repr__(self) -> str:
        return f"TokenUpdate(v{self.old_version}->v{self.new_version})"


class UpdateStatus(enum.Enum):
    UPDATED = "updated"
    CHANGED = "changed"  # the row is gone or changed meanwhile: nothing written
    # A deterministic row with the new fingerprint is live already: nothing written.
    DETERMINISTIC_EXISTS = "deterministic_exists"


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    tenant: str  # the tenant it applies to
    kind: int  # DataKind number
    max_age: float  # seconds a value may be kept after its creation
    set_at: float  # unix seconds the policy was set


@dataclass(frozen=True, slots=True)
class RetentionStats:
    tenant: str
    kind: int
    due: int  # rows older than the policy allows, not held (purged at the next run)
    held: int  # rows older than the policy allows but kept: their subject is held
    purged: int  # rows the retention job removed so far
    last_purge_at: float | None  # unix seconds of the last purge that removed rows


@dataclass(frozen=True, slots=True)
class RetentionCounts:
    """Rows of one tenant and kind created before a boundary, split by legal hold."""

    due: int  # not held: a purge with that boundary removes them
    held: int  # kept: their subject is under legal hold


@dataclass(frozen=True, slots=True)
class RetentionPurges:
    """The purge counter of one tenant and kind (it outlives a cleared policy)."""

    tenant: str
    kind: int
    purged: int  # rows the retention job removed so far
    last_purge_at: float  # unix seconds of the last purge that removed rows


# The MAC the first audit record chains from.
AUDIT_GENESIS_MAC = bytes(32)
# Leading byte of an audit record's canonical bytes; a new layout gets a new number.
_AUDIT_FORMAT = 1
# Leading byte of the sealed head's content, so a head can never pass for a record.
_AUDIT_HEAD_FORMAT = 0x48
_U32 = struct.Struct(">I")
_HEAD = struct.Struct(">BQ")
_RECORD_START = struct.Struct(">BQd")


def _field(out: list[bytes], text: str) -> None:
    data = text.encode("utf-8", "surrogatepass")
    out.append(_U32.pack(len(data)))
    out.append(data)


@dataclass(frozen=True, slots=True)
class AuditRow:
    """One audit record as stored. Never holds a value, a masked value or a credential."""

    seq: int  # position in the chain, from 1, no gaps; assigned by the store on append
    time: float  # unix seconds the event happened
    caller: str  # authenticated caller name ("" when authentication failed)
    tenant: str  # the caller's tenant ("" when unknown)
    action: str  # what was attempted, e.g. token.reveal, caller.add
    tokens: tuple[str, ...]  # the token(s) acted on (tokens are not values)
    purpose: str  # the reason the caller gave for a reveal
    outcome: str  # ok | denied | error
    reason: str  # UPPER_SNAKE reason code when the outcome is not ok
    request_id: str  # the request's id (x-request-id, or one the vault made up)
    peer: str  # the network peer of the call (gRPC peer string)
    detail: tuple[tuple[str, str], ...]  # non-sensitive facts (method, counts), sorted by key
    mac: bytes  # HMAC-SHA-256(audit key, previous record's mac || content()); set on append

    def __repr__(self) -> str:
        return f"AuditRow(seq={self.seq}, action={self.action!r}, outcome={self.outcome!r})"

    def texts(self) -> tuple[str, ...]:
        """The text fields, in content() order."""
        return (
            self.caller,
            self.tenant,
            self.action,
            self.purpose,
            self.outcome,
            self.reason,
            self.request_id,
            self.peer,
        )

    def content(self) -> bytes:
        """The canonical bytes the MAC covers: every stored field but the MAC, in a fixed
        order, each variable-length part length-prefixed, so no two rows encode alike."""
        return audit_content(
            self.seq,
            self.time,
            audit_texts_bytes(self.texts()),
            audit_tokens_bytes(self.tokens),
            audit_detail_bytes(self.detail),
        )


# The parts of AuditRow.content(), separately: the rows of one call share their texts
# and detail, so the store encodes those once per call, not once per token.
def audit_texts_bytes(texts: tuple[str, ...]) -> bytes:
    out: list[bytes] = []
    for text in texts:
        _field(out, text)
    return b"".join(out)


def audit_tokens_bytes(tokens: tuple[str, ...]) -> bytes:
    out = [_U32.pack(len(tokens))]
    for token in tokens:
        _field(out, token)
    return b"".join(out)


def audit_detail_bytes(detail: tuple[tuple[str, str], ...]) -> bytes:
    out = [_U32.pack(len(detail))]
    for key, value in detail:
        _field(out, key)
        _field(out, value)
    return b"".join(out)


def audit_content(seq: int, time: float, texts: bytes, tokens: bytes, detail: bytes) -> bytes:
    return _RECORD_START.pack(_AUDIT_FORMAT, seq, time) + texts + tokens + detail


@dataclass(frozen=True, slots=True)
class AuditHead:
    """The newest record's seq, sealed: rows cut off the end of the chain show up as a head
    that points past the last row."""

    seq: int  # seq of the last record appended
    mac: bytes  # seal(that record's mac, head_content(seq))

    @staticmethod
    def content(seq: int) -> bytes:
        return _HEAD.pack(_AUDIT_HEAD_FORMAT, seq)


# Supplied by the audit layer (which alone holds the audit key): the MAC of a record
# given the previous record's MAC and the record's content().
AuditSeal = Callable[[bytes, bytes], bytes]


class TokenStore(Protocol):
    """Token rows: the tokenize, reveal, delete and correction paths."""

    async def insert_tokens(
        self, records: Sequence[TokenRecord], now: float, encryptions: Mapping[int, int]
    ) -> list[InsertOutcome]:
        """Insert records atomically, one outcome per record, in order.

        A held subject's row counts as live past its expiry (legal hold).
        Records whose request id or deterministic key already has a live token are not
        inserted (their outcome carries the existing token); a request id answered by a
        deterministic hit is still reserved for that request. If any record's token is
        taken, or its request id was used for a different request (request_hash), nothing
        of this call is inserted. ``encryptions`` (key version → count)
        is added to the key versions' usage counters in the same transaction. Returns
        only once the transaction is durable.
        """
        ...

    async def get_tokens(self, tokens: Sequence[str]) -> list[TokenRecord | None]:
        """Rows for the tokens, in order; None where absent (expiry is the caller's check)."""
        ...

    async def delete_token(self, tenant: str, token: str) -> bool:
        """Remove the row if it belongs to the tenant; False if there was none."""
        ...

    async def update_token(self, update: TokenUpdate) -> UpdateStatus:
        """Apply the compare-and-set; a deterministic row's new fingerprint must not be
        taken by another live deterministic row of its tenant, kind and format (an
        expired, unheld one is removed). Adds one encryption to ``new_version``."""
        ...

    async def purge_expired(self, now: float, limit: int) -> int:
        """Delete up to ``limit`` rows expired at ``now`` (never a held subject's); returns
        how many."""
        ...


class KeyVersionStore(Protocol):
    """Data-key versions and their usage counters."""

    async def key_versions(self) -> list[KeyVersionRow]: ...

    async def add_key_version(
        self, wrapped_key: bytes, kek_id: str, created_at: float, *, primary: bool
    ) -> int:
        """Add a version (the next number); with ``primary`` the old primary becomes active."""
        ...

    async def add_next_key_version(
        self, version: int, wrapped_key: bytes, kek_id: str, created_at: float
    ) -> bool:
        """Add ``version`` as the primary (the old primary becomes active) if it is the
        next number; False (nothing written) if another version took that number."""
        ...

    async def records_by_key_version(self) -> dict[int, int]:
        """How many token rows name each key version (versions without rows absent)."""
        ...

    async def retire_key_version(self, version: int) -> RetireOutcome:
        """In one transaction: refuse (nothing changed) unknown, primary, retired or
        in-use versions; otherwise set it retired and destroy its wrapped key."""
        ...


class WrappedKeyStore(Protocol):
    """Keys wrapped by the master key: fingerprint keys, service keys, and the
    listing master-key rotation walks."""

    async def fingerprint_key(self, tenant: str) -> bytes | None: ...

    async def put_fingerprint_key(
        self, tenant: str, wrapped_key: bytes, kek_id: str, created_at: float
    ) -> bytes:
        """Store the tenant's wrapped fingerprint key unless one exists; return the stored one."""
        ...

    async def service_key(self, name: str) -> bytes | None:
        """A wrapped vault-wide key (e.g. the audit key ``audit:1``), or None."""
        ...

    async def put_service_key(
        self, name: str, wrapped_key: bytes, kek_id: str, created_at: float
    ) -> bytes:
        """Store the wrapped key unless one of that name exists; return the stored one."""
        ...

    async def wrapped_keys(self) -> list[WrappedKeyRow]:
        """Every key wrapped by a master key: data-key versions that are not retired,
        fingerprint keys and service keys (one listing, for master-key rotation)."""
        ...

    async def replace_wrapped_key(
        self, kind: WrappedKeyKind, name: str, old: bytes, new: bytes, kek_id: str
    ) -> bool:
        """Compare-and-set: store ``new`` (wrapped by ``kek_id``) only if the row still
        holds ``old``; False (nothing written) if it changed or is gone."""
        ...


class ShareSchemeStore(Protocol):
    """The custodian-share facts of a split master key."""

    async def share_scheme(self) -> ShareSchemeRow | None:
        """The custodian-share facts of the master key; None unless it was split."""
        ...

    async def put_share_scheme(self, scheme: ShareSchemeRow) -> bool:
        """Record the facts unless some are recorded; False (nothing written) if so."""
        ...


class RewrapStore(Protocol):
    """Rewrap: the rows still under an older version, their updates, and progress."""

    async def tokens_to_rewrap(self, primary: int, after: int, limit: int) -> list[RewrapRow]:
        """Up to ``limit`` rows not under ``primary``, past position ``after``, in order."""
        ...

    async def rewrap_tokens(self, updates: Sequence[RewrapUpdate], encryptions: int) -> int:
        """Apply each update only if the row still has its old version and ciphertext;
        add ``encryptions`` to the new version's counter in the same transaction.
        Returns how many rows were updated."""
        ...

    async def put_rewrap_progress(self, progress: RewrapProgressRow) -> None:
        """Replace the stored progress with ``progress`` (one write)."""
        ...

    async def rewrap_progress(self) -> RewrapProgressRow | None:
        """The stored progress with the lease's expiry if its run holds the lease (one
        read); None if no rewrap ever ran."""


class LeaseStore(Protocol):
    """Leases that keep one holder per job across every process on the store."""

    async def take_rewrap_lease(self, holder: str, now: float, expires_at: float) -> bool:
        """Take or renew the store's one rewrap lease; False if another holder's is live."""
        ...

    async def release_rewrap_lease(self, holder: str) -> None: ...

    async def take_job_lease(self, job: str, holder: str, now: float, expires_at: float) -> bool:
        """Take or renew the lease of background job ``job`` (one holder per job across
        every process on the store); False if another holder's lease is live at ``now``."""
        ...

    async def release_job_lease(self, job: str, holder: str) -> None:
        """Give the job's lease up if ``holder`` holds it (another process may take it)."""
        ...


class CallerStore(Protocol):
    """Callers (API-key hashes and certificate identities) and their policies."""

    async def add_caller(self, caller: CallerRow) -> None:
        """Raises AlreadyExistsError if the name is taken."""
        ...

    async def caller_by_key_id(self, key_id: str) -> CallerRow | None: ...

    async def caller_by_cert_identity(self, identity: str) -> CallerRow | None: ...

    async def callers(self) -> list[CallerRow]: ...

    async def revoke_caller(self, name: str, revoked_at: float) -> bool: ...


class AuditStore(Protocol):
    """The hash-chained audit trail."""

    async def append_audit(self, rows: Sequence[AuditRow], seal: AuditSeal) -> list[AuditRow]:
        """Append rows to the audit chain, in order, atomically; return them as stored.

        Inside the write transaction (so processes sharing the store keep one chain), each
        row gets the next seq and ``mac = seal(previous mac, row.content())`` (the first
        record chains from AUDIT_GENESIS_MAC), and the head is resealed. Returns only once
        the transaction is durable. ``seq`` and ``mac`` of the given rows are ignored.
        """
        ...

    async def audit_records(self, after_seq: int, limit: int) -> list[AuditRow]:
        """Up to ``limit`` records with seq > ``after_seq``, by seq."""
        ...

    async def audit_head(self) -> AuditHead | None:
        """The sealed head of the chain; None before the first append."""
        ...

    async def audit_records_for_tokens(
        self, tenant: str, action: str, tokens: Sequence[str]
    ) -> list[AuditRow]:
        """Records of ``action`` in ``tenant`` naming any of ``tokens``, by seq (a scan of
        the trail: it has no token index, so appends stay as cheap as they are)."""
        ...


class SubjectStore(Protocol):
    """Data subjects, known to the store only as (tenant, subject_ref): the HMAC
    of the subject id."""

    async def subject_tokens(self, tenant: str, subject_ref: bytes) -> list[TokenRecord]:
        """Every row of the subject (expired ones too), in creation order."""
        ...

    async def erase_subject(self, tenant: str, subject_ref: bytes) -> EraseOutcome:
        """In one transaction: refuse (nothing removed) if the subject is held, otherwise
        remove every row of the subject."""
        ...

    async def set_subject_hold(
        self, tenant: str, subject_ref: bytes, reason: str, now: float
    ) -> bool:
        """Hold the subject; False (the first hold kept as it is) if it was held already."""
        ...

    async def release_subject_hold(self, tenant: str, subject_ref: bytes) -> bool:
        """Release the hold; False if there was none."""
        ...

    async def subject_held(self, tenant: str, subject_ref: bytes) -> bool: ...


class RetentionStore(Protocol):
    """Retention policies per tenant and kind, and their purges."""

    async def set_retention_policy(
        self, tenant: str, kind: int, max_age: float, now: float
    ) -> None: ...

    async def clear_retention_policy(self, tenant: str, kind: int) -> bool:
        """False if there was none."""
        ...

    async def retention_policies(self) -> list[RetentionPolicy]: ...

    async def purge_retained(
        self, tenant: str, kind: int, created_before: float, now: float, limit: int
    ) -> int:
        """Remove every unheld row of the tenant and kind created before
        ``created_before``, in transactions of at most ``limit`` rows, each adding its
        rows to the purge counter; returns how many. (Rows whose clock ran behind may
        wait for a later call: SQLite finds old rows as an id prefix.)"""
        ...

    async def retention_counts(
        self, tenant: str, kind: int, created_before: float
    ) -> RetentionCounts:
        """Rows of the tenant and kind created before ``created_before``: due and held
        (found as purge_retained finds them)."""
        ...

    async def retention_purges(self) -> list[RetentionPurges]:
        """Every purge counter, cleared policies' too."""
        ...


class Store(
    TokenStore,
    KeyVersionStore,
    WrappedKeyStore,
    ShareSchemeStore,
    RewrapStore,
    LeaseStore,
    CallerStore,
    AuditStore,
    SubjectStore,
    RetentionStore,
    RouteStore,
    Protocol,
):
    """Every aggregate together: for the composition root and the storage contract
    suite only. A use case takes the narrowest protocol above that it needs."""

    async def open(self) -> None:
        """Connect and apply migrations; afterwards the store serves."""
        ...

    async def close(self) -> None:
        """Flush pending commits, then disconnect."""
        ...


class SubjectKeyStore(Protocol):
    """Wrapped per-subject keys, kept apart from the Store on purpose: backups of the
    store must not contain them, or an erased subject's values could be restored.

    SQLite: its own file (DATA_DIR/subject-keys.db). PostgreSQL: its own database (or at
    least its own schema, left out of dumps and WAL archives). Keys are wrapped by the
    service key ``subject-wrap:1``, which lives in the Store.
    """

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def subject_key(self, tenant: str, subject_ref: bytes) -> bytes | None:
        """The wrapped key, or None (never created, or destroyed)."""
        ...

    async def put_subject_key(
        self, tenant: str, subject_ref: bytes, wrapped_key: bytes, created_at: float
    ) -> bytes:
        """Store the wrapped key unless the subject has one; return the stored one (two
        processes racing agree on whichever reached the store first)."""
        ...

    async def destroy_subject_key(self, tenant: str, subject_ref: bytes) -> bool:
        """Remove the key (secure delete: its bytes do not stay in free pages); False if
        there was none."""
        ...


# Observer of group commits (records per commit), for metrics.
CommitObserver = Callable[[int], None]
