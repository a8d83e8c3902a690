"""What the stores hold and return: rows, outcomes and the audit records, as plain data.

Values arrive encrypted, fingerprints and subject references as HMACs: nothing here is
plaintext. The protocols that move these rows are in ``vault.storage.base``.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "AUDIT_GENESIS_MAC",
    "AUDIT_KEY_NAME",
    "AuditHead",
    "AuditRow",
    "AuditSeal",
    "CallerRow",
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
    "TokenRecord",
    "TokenUpdate",
    "UpdateStatus",
    "WrappedKeyKind",
    "WrappedKeyRow",
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
# Name of the audit key in service_keys (and the label it is wrapped under): a store
# holding it has a sealed genesis head, so an append without a head is refused.
AUDIT_KEY_NAME = "audit:1"


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
        """The canonical bytes the MAC covers (vault.audit.chain.record_content)."""
        from vault.audit.chain import record_content  # noqa: PLC0415 - audit owns the encoding

        return record_content(self)


@dataclass(frozen=True, slots=True)
class AuditHead:
    """The newest record's seq, sealed: rows cut off the end of the chain show up as a head
    that points past the last row."""

    seq: int  # seq of the last record appended
    mac: bytes  # seal(that record's mac, head_content(seq))

    @staticmethod
    def content(seq: int) -> bytes:
        """The bytes the head's MAC covers (vault.audit.chain.head_content)."""
        from vault.audit.chain import head_content  # noqa: PLC0415 - audit owns the encoding

        return head_content(seq)


# Supplied by the audit layer (which alone holds the audit key): the MAC of a record
# given the previous record's MAC and the record's content().
AuditSeal = Callable[[bytes, bytes], bytes]
