"""Data-key rotation: status, a new primary, re-encryption of older records, retirement.

The lifecycle of a version: primary (encrypts new records) → active (decrypts only,
once a newer primary exists) → retired (its wrapped key destroyed, once no record
names it). `rewrap` moves records from older versions to the primary online: each row
is replaced by a compare-and-set on (version, ciphertext), so a row deleted or changed
meanwhile is never resurrected or encrypted twice, and a run killed at any point leaves
every row either old or new (running it again continues).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from vault.clock import Clock
from vault.crypto.aead import record_aad
from vault.crypto.base import KekProvider
from vault.crypto.keyring import Keyring, KeyState, WrappedKeyVersion, dek_label, new_data_key
from vault.errors import DecryptionError, FailedPreconditionError
from vault.storage.base import RetireOutcome, RewrapUpdate, Store

__all__ = [
    "DEFAULT_BATCH",
    "LEASE_SECONDS",
    "KeyVersionStatus",
    "RewrapProgress",
    "key_status",
    "load_keyring",
    "retire",
    "rewrap",
    "rotate",
]

DEFAULT_BATCH = 500
# A rewrap renews its lease at least this often (per batch, and while throttled); a
# killed run's lease frees itself after this long.
LEASE_SECONDS = 5.0
_RENEW_SLICE = 1.0


@dataclass(frozen=True, slots=True)
class KeyVersionStatus:
    version: int
    state: str
    created_at: float
    encryptions: int
    records: int  # token rows still naming it
    kek_id: str


@dataclass(frozen=True, slots=True)
class RewrapProgress:
    primary: int
    batches: int
    rewrapped: int  # rows moved to the primary by this run
    skipped: int  # rows changed or deleted meanwhile (compare-and-set lost)
    failed: int  # rows that did not decrypt (left as they are)
    remaining: int  # rows still on older versions after the batch (0 when done)


async def key_status(store: Store) -> list[KeyVersionStatus]:
    counts = await store.records_by_key_version()
    return [
        KeyVersionStatus(
            r.version, r.state, r.created_at, r.encryptions, counts.get(r.version, 0), r.kek_id
        )
        for r in await store.key_versions()
    ]


async def load_keyring(store: Store, kek: KekProvider) -> Keyring:
    rows = await store.key_versions()
    versions = [WrappedKeyVersion(r.version, KeyState(r.state), r.wrapped_key) for r in rows]
    return Keyring(kek, versions)


async def rotate(store: Store, kek: KekProvider, clock: Clock) -> tuple[int, int]:
    """A new random data key as the primary; returns (old primary, new primary)."""
    rows = await store.key_versions()
    if not rows:
        raise FailedPreconditionError("no data-key versions yet", reason="KEYRING_EMPTY")
    old = next((r.version for r in rows if r.state == KeyState.PRIMARY), 0)
    version = max(r.version for r in rows) + 1
    # The label binds the wrapped key to its version number, so the number is fixed
    # before wrapping and the store refuses it if another rotation took it first.
    wrapped = kek.wrap(new_data_key(), dek_label(version))
    if not await store.add_next_key_version(version, wrapped, kek.kek_id, clock.now()):
        raise FailedPreconditionError(
            "another rotation added a version at the same time; run it again",
            reason="ROTATION_CONFLICT",
        )
    return old, version


async def rewrap(
    store: Store,
    kek: KekProvider,
    clock: Clock,
    *,
    batch: int = DEFAULT_BATCH,
    rate: float = 0.0,
    progress: Callable[[RewrapProgress], None] | None = None,
    lease_seconds: float = LEASE_SECONDS,
) -> RewrapProgress:
    """Re-encrypt every record of an older version under the primary, in batches of
    ``batch``, at most ``rate`` records per second (0 = unlimited)."""
    if batch < 1:
        raise ValueError("batch must be at least 1")
    holder = secrets.token_hex(8)

    async def renew() -> None:
        now = clock.now()
        if not await store.take_rewrap_lease(holder, now, now + lease_seconds):
            raise FailedPreconditionError(
                "another rewrap is running on this store", reason="REWRAP_RUNNING"
            )

    await renew()
    try:
        keyring = await load_keyring(store, kek)
        primary = keyring.primary
        after = 0
        batches = rewrapped = skipped = failed = 0
        started = time.monotonic()
        while True:
            await renew()
            rows = await store.tokens_to_rewrap(primary.version, after, batch)
            if not rows:
                break
            after = rows[-1].position
            updates = []
            for item in rows:
                rec = item.record
                try:
                    old_key = keyring.key(rec.key_version)
                    old_aad = record_aad(
                        rec.tenant, rec.kind, rec.token_format, rec.token, rec.key_version
                    )
                    plain = old_key.decrypt(rec.ciphertext, old_aad)
                except DecryptionError:
                    failed += 1
                    continue
                aad = record_aad(rec.tenant, rec.kind, rec.token_format, rec.token, primary.version)
                updates.append(
                    RewrapUpdate(
                        rec.token,
                        rec.key_version,
                        rec.ciphertext,
                        primary.version,
                        primary.encrypt(plain, aad),
                    )
                )
            done = await store.rewrap_tokens(updates, len(updates)) if updates else 0
            batches += 1
            rewrapped += done
            skipped += len(updates) - done
            if progress is not None:
                counts = await store.records_by_key_version()
                remaining = sum(n for v, n in counts.items() if v != primary.version)
                progress(
                    RewrapProgress(primary.version, batches, rewrapped, skipped, failed, remaining)
                )
            if rate > 0:
                # Throttle: the run's average stays at or under `rate` records a second.
                due = started + (rewrapped + skipped + failed) / rate - time.monotonic()
                while due > 0:
                    await asyncio.sleep(min(due, _RENEW_SLICE))
                    await renew()
                    due = started + (rewrapped + skipped + failed) / rate - time.monotonic()
        counts = await store.records_by_key_version()
        remaining = sum(n for v, n in counts.items() if v != primary.version)
        return RewrapProgress(primary.version, batches, rewrapped, skipped, failed, remaining)
    finally:
        await store.release_rewrap_lease(holder)


_REFUSALS = {
    RetireOutcome.UNKNOWN: ("no such key version", "KEY_VERSION_UNKNOWN"),
    RetireOutcome.PRIMARY: ("the primary version cannot be retired", "KEY_VERSION_PRIMARY"),
    RetireOutcome.ALREADY_RETIRED: ("that version is already retired", "KEY_VERSION_RETIRED"),
    RetireOutcome.IN_USE: (
        "records still use that version (run `vaultctl keys rewrap` first)",
        "KEY_VERSION_IN_USE",
    ),
}


async def retire(store: Store, version: int) -> None:
    """Destroy an active version no record uses; refusals raise and change nothing."""
    outcome = await store.retire_key_version(version)
    if outcome is not RetireOutcome.RETIRED:
        message, reason = _REFUSALS[outcome]
        raise FailedPreconditionError(f"key version {version}: {message}", reason=reason)
