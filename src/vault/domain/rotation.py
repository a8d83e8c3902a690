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
from dataclasses import dataclass, replace

from vault.clock import Clock
from vault.crypto.aead import RecordKey
from vault.crypto.base import KekProvider
from vault.crypto.keyring import (
    Keyring,
    KeyState,
    WrappedKeyVersion,
    dek_label,
    new_data_key,
)
from vault.domain.codec import reseal
from vault.errors import AbortedError, DecryptionError, FailedPreconditionError, NotFoundError
from vault.storage.base import (
    KeyVersionRow,
    RetireOutcome,
    RewrapProgressRow,
    RewrapRow,
    RewrapUpdate,
    Store,
)

__all__ = [
    "DEFAULT_BATCH",
    "LEASE_SECONDS",
    "REWRAP_FINISHED",
    "REWRAP_INTERRUPTED",
    "REWRAP_RUNNING",
    "KeyVersionStatus",
    "RewrapProgress",
    "RewrapRun",
    "RewrapStatus",
    "add_primary",
    "key_status",
    "load_keyring",
    "retire",
    "rewrap",
    "rewrap_status",
    "rotate",
    "start_rewrap",
]

DEFAULT_BATCH = 500
# A rewrap renews its lease at least this often (per batch, and while throttled); a
# killed run's lease frees itself after this long.
LEASE_SECONDS = 5.0
_RENEW_SLICE = 1.0
# States of the latest rewrap run (RewrapStatus.state).
REWRAP_RUNNING = "running"
REWRAP_FINISHED = "finished"
REWRAP_INTERRUPTED = "interrupted"  # killed, or stopped by an error, before finishing


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


async def add_primary(
    store: Store, kek: KekProvider, clock: Clock, rows: list[KeyVersionRow]
) -> int | None:
    """Add the version after the newest of ``rows`` as the primary; None (nothing written)
    if another process added a version since ``rows`` were read (a compare-and-set)."""
    version = max(r.version for r in rows) + 1
    # The label binds the wrapped key to its version number, so the number is fixed
    # before wrapping and the store refuses it if another rotation took it first.
    wrapped = kek.wrap(new_data_key(), dek_label(version))
    if not await store.add_next_key_version(version, wrapped, kek.kek_id, clock.now()):
        return None
    return version


async def rotate(store: Store, kek: KekProvider, clock: Clock) -> tuple[int, int]:
    """A new random data key as the primary; returns (old primary, new primary)."""
    rows = await store.key_versions()
    if not rows:
        raise FailedPreconditionError("no data-key versions yet", reason="KEYRING_EMPTY")
    old = next((r.version for r in rows if r.state == KeyState.PRIMARY), 0)
    version = await add_primary(store, kek, clock, rows)
    if version is None:
        raise AbortedError(
            "another rotation added a version at the same time; run it again",
            reason="ROTATION_CONFLICT",
        )
    return old, version


@dataclass(frozen=True, slots=True)
class RewrapStatus:
    """The latest rewrap run as the store knows it, whichever process ran it."""

    state: str  # running | finished | interrupted (killed, or stopped by an error)
    progress: RewrapProgressRow


async def rewrap_status(store: Store, clock: Clock) -> RewrapStatus | None:
    """The latest run's progress (None if no rewrap ever ran on this store)."""
    row = await store.rewrap_progress()
    if row is None:
        return None
    if row.finished_at is not None:
        state = REWRAP_FINISHED
    elif row.lease_expires_at is not None and row.lease_expires_at > clock.now():
        state = REWRAP_RUNNING
    else:
        state = REWRAP_INTERRUPTED
    return RewrapStatus(state, row)


def _older(counts: dict[int, int], primary: int) -> int:
    return sum(n for v, n in counts.items() if v != primary)


def _resealed(
    rows: list[RewrapRow], keyring: Keyring, primary: RecordKey
) -> tuple[list[RewrapUpdate], int]:
    """The rows sealed again under ``primary``, and how many would not decrypt."""
    updates = []
    failed = 0
    for item in rows:
        rec = item.record
        try:
            ciphertext = reseal(rec, keyring, primary)
        except DecryptionError:
            failed += 1
            continue
        updates.append(
            RewrapUpdate(rec.token, rec.key_version, rec.ciphertext, primary.version, ciphertext)
        )
    return updates, failed


class RewrapRun:
    """One rewrap, its lease taken (``start_rewrap``); ``run`` does the work. Progress is
    written to the store after every batch so every server (and ``keys status``) sees it.

    While running, ``remaining`` is an estimate (rows on older versions at the start minus
    rows handled since; one count per run rather than one per batch, which would make a
    large rewrap quadratic); the final progress counts exactly.
    """

    def __init__(
        self,
        store: Store,
        clock: Clock,
        holder: str,
        progress: RewrapProgressRow,
        lease_seconds: float,
    ) -> None:
        self._store = store
        self._clock = clock
        self.holder = holder
        self.progress = progress
        self._lease_seconds = lease_seconds
        self._initial = progress.remaining

    def __repr__(self) -> str:
        return f"RewrapRun(primary={self.progress.primary_version})"

    async def _renew(self) -> None:
        now = self._clock.now()
        if not await self._store.take_rewrap_lease(self.holder, now, now + self._lease_seconds):
            raise FailedPreconditionError(
                "another rewrap is running on this store", reason="REWRAP_RUNNING"
            )

    async def _sleep(self, seconds: float) -> None:
        """Wait, renewing the lease so it never lapses while this run is alive."""
        until = time.monotonic() + seconds
        while (due := until - time.monotonic()) > 0:
            await asyncio.sleep(min(due, _RENEW_SLICE))
            await self._renew()

    async def _save(self, **changes: float | None) -> RewrapProgress:
        self.progress = replace(self.progress, **changes)  # type: ignore[arg-type]
        await self._store.put_rewrap_progress(self.progress)
        p = self.progress
        return RewrapProgress(
            p.primary_version, p.batches, p.rewrapped, p.skipped, p.failed, p.remaining
        )

    async def release(self) -> None:
        await self._store.release_rewrap_lease(self.holder)

    async def run(
        self,
        kek: KekProvider,
        *,
        progress: Callable[[RewrapProgress], None] | None = None,
        settle_seconds: float = 0.0,
    ) -> RewrapProgress:
        """Re-encrypt every record of an older version under the primary, then release
        the lease. ``settle_seconds``: first wait this long (holding the lease) so servers
        load a fresh primary and stop writing under the old one."""
        try:
            return await self._run(kek, progress, settle_seconds)
        finally:
            await self.release()

    async def _run(
        self,
        kek: KekProvider,
        progress: Callable[[RewrapProgress], None] | None,
        settle_seconds: float,
    ) -> RewrapProgress:
        if settle_seconds > 0:
            await self._sleep(settle_seconds)
        keyring = await load_keyring(self._store, kek)
        primary = keyring.primary
        if primary.version != self.progress.primary_version:
            # Rotated again since the start: move everything to the newest primary.
            counts = await self._store.records_by_key_version()
            self._initial = _older(counts, primary.version)
            await self._save(primary_version=primary.version, remaining=self._initial)
        batch, rate = self.progress.batch_size, self.progress.rate
        after = 0
        batches = rewrapped = skipped = failed = 0
        started = time.monotonic()
        while True:
            await self._renew()
            rows = await self._store.tokens_to_rewrap(primary.version, after, batch)
            if not rows:
                break
            after = rows[-1].position
            updates, undecryptable = _resealed(rows, keyring, primary)
            failed += undecryptable
            done = await self._store.rewrap_tokens(updates, len(updates)) if updates else 0
            batches += 1
            rewrapped += done
            skipped += len(updates) - done
            handled = rewrapped + skipped + failed
            step = await self._save(
                last_batch_at=self._clock.now(),
                batches=batches,
                rewrapped=rewrapped,
                skipped=skipped,
                failed=failed,
                remaining=max(0, self._initial - handled),
            )
            if progress is not None:
                progress(step)
            if rate > 0:
                # Throttle: the run's average stays at or under `rate` records a second.
                await self._sleep(started + handled / rate - time.monotonic())
        counts = await self._store.records_by_key_version()
        now = self._clock.now()
        return await self._save(
            last_batch_at=now, finished_at=now, remaining=_older(counts, primary.version)
        )


async def start_rewrap(
    store: Store,
    clock: Clock,
    *,
    batch: int = DEFAULT_BATCH,
    rate: float = 0.0,
    lease_seconds: float = LEASE_SECONDS,
) -> RewrapRun:
    """Take the store's rewrap lease (REWRAP_RUNNING if another run holds it) and record
    the new run's progress; the caller then awaits ``run`` (now or in the background)."""
    if batch < 1:
        raise ValueError("batch must be at least 1")
    if rate < 0:
        raise ValueError("rate must not be negative")
    holder = secrets.token_hex(8)
    now = clock.now()
    if not await store.take_rewrap_lease(holder, now, now + lease_seconds):
        raise FailedPreconditionError(
            "another rewrap is running on this store", reason="REWRAP_RUNNING"
        )
    try:
        rows = await store.key_versions()
        primary = next((r.version for r in rows if r.state == KeyState.PRIMARY), 0)
        counts = await store.records_by_key_version()
        row = RewrapProgressRow(
            holder=holder,
            primary_version=primary,
            batch_size=batch,
            rate=rate,
            started_at=now,
            last_batch_at=now,
            finished_at=None,
            batches=0,
            rewrapped=0,
            skipped=0,
            failed=0,
            remaining=_older(counts, primary),
        )
        await store.put_rewrap_progress(row)
    except BaseException:
        await store.release_rewrap_lease(holder)
        raise
    return RewrapRun(store, clock, holder, row, lease_seconds)


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
    run = await start_rewrap(store, clock, batch=batch, rate=rate, lease_seconds=lease_seconds)
    return await run.run(kek, progress=progress)


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
        error = NotFoundError if outcome is RetireOutcome.UNKNOWN else FailedPreconditionError
        raise error(f"key version {version}: {message}", reason=reason)
