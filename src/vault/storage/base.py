"""The Store protocol: single-purpose storage primitives over opaque bytes.

The store never sees plaintext: values arrive encrypted, fingerprints and subject
references arrive as HMACs. Combined operations (tokenize = encrypt + insert + retry)
live in the domain layer. The rows and outcomes these protocols move are plain data in
``vault.storage.records`` (re-exported here).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from vault.storage.records import (
    AUDIT_GENESIS_MAC,
    AUDIT_KEY_NAME,
    AuditHead,
    AuditRow,
    AuditSeal,
    CallerRow,
    EraseOutcome,
    InsertOutcome,
    InsertStatus,
    KeyVersionRow,
    RetentionCounts,
    RetentionPolicy,
    RetentionPurges,
    RetentionStats,
    RetireOutcome,
    RewrapProgressRow,
    RewrapRow,
    RewrapUpdate,
    ShareSchemeRow,
    TokenRecord,
    TokenUpdate,
    UpdateStatus,
    WrappedKeyKind,
    WrappedKeyRow,
)
from vault.storage.route_store import RouteStore

__all__ = [
    "AUDIT_GENESIS_MAC",
    "AUDIT_KEY_NAME",
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
]


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
        self,
        name: str,
        wrapped_key: bytes,
        kek_id: str,
        created_at: float,
        genesis: AuditHead | None = None,
    ) -> bytes:
        """Store the wrapped key unless one of that name exists; return the stored one.
        ``genesis``: the audit chain's first head, written with the key that wins."""
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
        First, in the same transaction, the stored head must seal the newest row
        (vault.audit.chain.check_head); if not, nothing is appended or repaired and
        AuditChainBrokenError is raised.
        """
        ...

    async def audit_records(self, after_seq: int, limit: int) -> list[AuditRow]:
        """Up to ``limit`` records with seq > ``after_seq``, by seq."""
        ...

    async def audit_head(self) -> AuditHead | None:
        """The sealed head of the chain (seq 0: the genesis head written with the audit
        key); None on a store without a trail yet, or whose head was removed."""
        ...

    async def audit_records_for_tokens(
        self, tenant: str, action: str, tokens: Sequence[str]
    ) -> list[AuditRow]:
        """Records of ``action`` in ``tenant`` naming any of ``tokens``, by seq, from the
        token index (audit_tokens, written with each record; sql/audit_index.py). Only
        token.reveal records are indexed: another action is a ValueError."""
        ...

    async def audit_index_rows(self, first_seq: int, last_seq: int) -> list[tuple[str, str, int]]:
        """(tenant, token, seq) rows of the token index for records first..last seq."""
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
