"""Key operations as one audited use case, for the CLI, the KeyService RPCs and the
vault's own auto-rotation: status, rotate, rewrap (in the foreground or in the
background), retire.

Every change is recorded in the audit trail under the actor who asked for it (an
operator running vaultctl, a caller of KeyService, or ``vault`` for auto-rotation):
versions and counts only, never key material. Refusals are recorded too.

Auto-rotation: the primary is replaced once it is ``max_age`` seconds old (the
cryptoperiod; 0 = no age limit) or has done ``max_encryptions`` encryptions (at most
2^31, far under the 2^32 random-nonce limit of AES-GCM). Several servers may decide at
once; the store's compare-and-set lets one add the version and the others reload it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from vault import metrics
from vault.audit.base import (
    ACTION_KEY_RETIRE,
    ACTION_KEY_REWRAP,
    ACTION_KEY_ROTATE,
    ACTION_KEY_STATUS,
    OUTCOME_DENIED,
    OUTCOME_ERROR,
    OUTCOME_OK,
    AuditEvent,
    AuditSink,
)
from vault.clock import Clock
from vault.crypto.base import KekProvider
from vault.crypto.keyring import KeyState
from vault.domain import rotation
from vault.domain.model import RequestContext
from vault.errors import UnavailableError, VaultError
from vault.storage.base import KeyVersionRow, RewrapProgressRow, Store

__all__ = [
    "DEFAULT_MAX_AGE",
    "DEFAULT_MAX_ENCRYPTIONS",
    "VAULT_ACTOR",
    "Actor",
    "AutoRotation",
    "KeyMetrics",
    "KeyOperations",
    "KeyStatus",
    "RotationLimits",
    "UsageWatch",
    "rotation_due",
]

log = logging.getLogger(__name__)

DEFAULT_MAX_AGE = 365 * 86400.0  # one year: the default cryptoperiod
DEFAULT_MAX_ENCRYPTIONS = 2**30

TRIGGER_AGE = "age"
TRIGGER_ENCRYPTIONS = "encryptions"


@dataclass(frozen=True, slots=True)
class Actor:
    """Who asks for a key operation, as the audit trail names them."""

    name: str  # caller name, ``vaultctl:<user>``, or ``vault``
    tenant: str = ""  # the caller's tenant ("" for operators and the vault)
    request: RequestContext = field(default_factory=RequestContext)


VAULT_ACTOR = Actor("vault")


@dataclass(frozen=True, slots=True)
class RotationLimits:
    max_age: float = DEFAULT_MAX_AGE  # seconds; 0 = no age limit
    max_encryptions: int = DEFAULT_MAX_ENCRYPTIONS


@dataclass(frozen=True, slots=True)
class AutoRotation:
    old_primary: int
    primary: int
    trigger: str  # age | encryptions


@dataclass(frozen=True, slots=True)
class KeyStatus:
    versions: list[rotation.KeyVersionStatus]
    rewrap: rotation.RewrapStatus | None  # the latest rewrap run; None if none ever ran


def rotation_due(row: KeyVersionRow, limits: RotationLimits, now: float) -> str | None:
    """Why the primary ``row`` must be replaced now (a TRIGGER_*), or None."""
    if row.encryptions >= limits.max_encryptions:
        return TRIGGER_ENCRYPTIONS
    if limits.max_age > 0 and now - row.created_at >= limits.max_age:
        return TRIGGER_AGE
    return None


class UsageWatch:
    """Notices, on the tokenize path, that the primary crossed the encryption limit
    between two periodic checks, and wakes the rotation job at once.

    It adds this process's encryptions to the count the store had at the last check. The
    bound: this process stops encrypting under a full key within one rotation (a store
    write and a keyring reload) of crossing it; other processes' encryptions are seen at
    the next check (``key_refresh_interval``), so with N servers the key can pass the
    limit by at most what N servers encrypt in one refresh interval plus one rotation.
    """

    def __init__(self, max_encryptions: int) -> None:
        self._max = max_encryptions
        self._version = 0
        self._count = 0
        self.due = asyncio.Event()

    def observe(self, primary: int, encryptions: int) -> None:
        """The store's count for the primary, read at a check."""
        self._version, self._count = primary, encryptions
        if encryptions >= self._max:
            self.due.set()

    def encrypted(self, version: int, count: int) -> None:
        """``count`` records were just encrypted under ``version`` by this process."""
        if version == self._version:
            self._count += count
            if self._count >= self._max:
                self.due.set()


class KeyMetrics:
    """Exports key usage and rewrap progress. Rewrap progress is read from the store, so
    every server shows a rewrap any process runs; the counter advances by what a run did
    since it was last seen, so seeing a run twice never counts twice."""

    def __init__(self) -> None:
        self._holder = ""
        self._rewrapped = 0
        self._primed = False

    def observe_versions(
        self, rows: list[KeyVersionRow], limits: RotationLimits, now: float
    ) -> None:
        for row in rows:
            metrics.KEY_ENCRYPTIONS.labels(str(row.version)).set(row.encryptions)
        primary = next((r for r in rows if r.state == KeyState.PRIMARY), None)
        if primary is not None:
            metrics.KEY_USAGE_RATIO.set(primary.encryptions / limits.max_encryptions)
            metrics.KEY_AGE.set(max(0.0, now - primary.created_at))

    def observe_rewrap(self, progress: RewrapProgressRow | None) -> None:
        """Call once at start (the baseline: what ran before this process is not
        counted), then at every refresh and after every batch this process runs."""
        primed, self._primed = self._primed, True
        if progress is None:
            return
        done = progress.rewrapped
        if not primed:
            self._holder, self._rewrapped = progress.holder, done
        elif progress.holder != self._holder:
            self._holder, self._rewrapped = progress.holder, 0
        if done > self._rewrapped:
            metrics.REWRAP_RECORDS.inc(done - self._rewrapped)
            self._rewrapped = done
        metrics.REWRAP_REMAINING.set(progress.remaining)
        metrics.REWRAP_LAST_PROGRESS.set(progress.last_batch_at)


def _outcome(exc: VaultError) -> str:
    # The caller's request was refused (a version it may not retire, a rewrap already
    # running) rather than failing.
    if exc.reason.startswith("KEY_VERSION_") or exc.reason == "REWRAP_RUNNING":
        return OUTCOME_DENIED
    return OUTCOME_ERROR


class KeyOperations:
    """The audited key lifecycle over a store and a master key.

    ``reload_keys`` runs once a change is in the store: the server reloads its keyring
    there, so its next write uses a new primary at once, and a retired key leaves its
    memory at once. ``audit`` None: not recorded
    (only where nothing is served).
    """

    def __init__(
        self,
        store: Store,
        kek: KekProvider,
        clock: Clock,
        audit: AuditSink | None,
        *,
        reload_keys: Callable[[], Awaitable[None]] | None = None,
        key_metrics: KeyMetrics | None = None,
    ) -> None:
        self._store = store
        self._kek = kek
        self._clock = clock
        self._audit = audit
        self._reload_keys = reload_keys
        self._metrics = key_metrics
        self._background: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return "KeyOperations()"

    def use_kek(self, kek: KekProvider) -> None:
        """Wrap new data keys under another master key from now on (after a rotate-master)."""
        self._kek = kek

    @property
    def store(self) -> Store:
        return self._store

    async def _record(
        self,
        actor: Actor,
        action: str,
        detail: Mapping[str, str],
        *,
        outcome: str = OUTCOME_OK,
        reason: str = "",
    ) -> None:
        if self._audit is None:
            return
        event = AuditEvent(
            self._clock.now(),
            actor.name,
            actor.tenant,
            action,
            outcome=outcome,
            reason=reason,
            request_id=actor.request.request_id,
            peer=actor.request.peer,
            detail=detail,
        )
        try:
            await self._audit.record([event])
        except Exception as exc:  # noqa: BLE001 - whatever failed, the caller is told
            log.error("audit append failed: %s", type(exc).__name__)
            raise UnavailableError(
                "the audit trail cannot be written; retry later", reason="AUDIT_UNAVAILABLE"
            ) from None

    async def _refused(
        self, actor: Actor, action: str, detail: Mapping[str, str], exc: VaultError
    ) -> None:
        """Record a refusal (best effort: the operation fails with its own error)."""
        try:
            await self._record(actor, action, detail, outcome=_outcome(exc), reason=exc.reason)
        except UnavailableError:
            return
        exc.audited = True

    # -- status ----------------------------------------------------------------------

    async def status(self, actor: Actor) -> KeyStatus:
        status = KeyStatus(
            await rotation.key_status(self._store),
            await rotation.rewrap_status(self._store, self._clock),
        )
        await self._record(actor, ACTION_KEY_STATUS, {})
        return status

    async def versions(self) -> list[rotation.KeyVersionStatus]:
        """The versions with their record counts (not audited: for answers to changes)."""
        return await rotation.key_status(self._store)

    # -- rotate ----------------------------------------------------------------------

    async def rotate(self, actor: Actor) -> tuple[int, int]:
        """A new primary; returns (old primary, new primary)."""
        try:
            old, new = await rotation.rotate(self._store, self._kek, self._clock)
        except VaultError as exc:
            await self._refused(actor, ACTION_KEY_ROTATE, {}, exc)
            raise
        await self._reload()
        await self._record(actor, ACTION_KEY_ROTATE, {"old_primary": str(old), "primary": str(new)})
        return old, new

    async def _reload(self) -> None:
        if self._reload_keys is not None:
            await self._reload_keys()

    async def auto_rotate(
        self, limits: RotationLimits, loaded_primary: int | None = None
    ) -> AutoRotation | None:
        """Rotate if the primary is due (by age or encryptions), as the vault itself.
        None if it is not due or another process rotated first; then, if the store's
        primary is not ``loaded_primary`` (the caller's keyring), keys are reloaded."""
        rows = await self._store.key_versions()
        primary = next((r for r in rows if r.state == KeyState.PRIMARY), None)
        if primary is None:
            return None
        if loaded_primary is not None and primary.version != loaded_primary:
            # Another process rotated since this one loaded: use its (young) version.
            await self._reload()
            return None
        trigger = rotation_due(primary, limits, self._clock.now())
        if trigger is None:
            return None
        # Decided and written on the same read: of servers racing, one adds the version.
        version = await rotation.add_primary(self._store, self._kek, self._clock, rows)
        if version is None:
            await self._reload()  # lost the race: load the winner's version
            return None
        await self._reload()
        await self._record(
            VAULT_ACTOR,
            ACTION_KEY_ROTATE,
            {"old_primary": str(primary.version), "primary": str(version), "trigger": trigger},
        )
        log.info("data key rotated by the vault (%s limit): v%d", trigger, version)
        return AutoRotation(primary.version, version, trigger)

    # -- rewrap ----------------------------------------------------------------------

    async def start_rewrap(self, actor: Actor, *, batch: int, rate: float) -> rotation.RewrapRun:
        """Take the store's rewrap lease; refused (and recorded) if a run holds it."""
        try:
            return await rotation.start_rewrap(self._store, self._clock, batch=batch, rate=rate)
        except VaultError as exc:
            await self._refused(actor, ACTION_KEY_REWRAP, _rewrap_detail(batch, rate), exc)
            raise

    async def finish_rewrap(
        self,
        actor: Actor,
        run: rotation.RewrapRun,
        *,
        progress: Callable[[rotation.RewrapProgress], None] | None = None,
        settle_seconds: float = 0.0,
    ) -> rotation.RewrapProgress:
        """Run a started rewrap to the end and record its result."""
        detail = _rewrap_detail(run.progress.batch_size, run.progress.rate)

        def step(p: rotation.RewrapProgress) -> None:
            if self._metrics is not None:
                self._metrics.observe_rewrap(run.progress)
            if progress is not None:
                progress(p)

        try:
            result = await run.run(self._kek, progress=step, settle_seconds=settle_seconds)
        except VaultError as exc:
            await self._refused(actor, ACTION_KEY_REWRAP, detail, exc)
            raise
        if self._metrics is not None:
            self._metrics.observe_rewrap(run.progress)
        ok = result.failed == 0
        await self._record(
            actor,
            ACTION_KEY_REWRAP,
            detail
            | {
                "primary": str(result.primary),
                "rewrapped": str(result.rewrapped),
                "skipped": str(result.skipped),
                "failed": str(result.failed),
                "remaining": str(result.remaining),
            },
            outcome=OUTCOME_OK if ok else OUTCOME_ERROR,
            reason="" if ok else "UNDECRYPTABLE_RECORDS",
        )
        return result

    async def rewrap_in_background(
        self, actor: Actor, *, batch: int, rate: float, settle_seconds: float = 0.0
    ) -> RewrapProgressRow:
        """Start a rewrap that runs in this process's background; returns its first
        progress at once (the lease is held when this returns). Progress shows in status.
        ``settle_seconds``: if the primary is younger than this, the run first waits until
        it is this old (servers load a new primary within their key refresh)."""
        wait = 0.0
        if settle_seconds > 0:
            rows = await self._store.key_versions()
            primary = next((r for r in rows if r.state == KeyState.PRIMARY), None)
            if primary is not None:
                wait = primary.created_at + settle_seconds - self._clock.now()
        # Nothing may fail between taking the lease and the task that releases it.
        run = await self.start_rewrap(actor, batch=batch, rate=rate)

        async def work() -> None:
            try:
                await self.finish_rewrap(actor, run, settle_seconds=wait)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a background job reports, not raises
                log.warning("background rewrap failed: %s", type(exc).__name__)

        self._background = asyncio.create_task(work(), name="rewrap")
        return run.progress

    async def close(self) -> None:
        """Stop a background rewrap (its lease is released; a new run resumes it)."""
        task, self._background = self._background, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    # -- retire ----------------------------------------------------------------------

    async def retire(self, actor: Actor, version: int) -> None:
        detail = {"version": str(version)}
        try:
            await rotation.retire(self._store, version)
        except VaultError as exc:
            await self._refused(actor, ACTION_KEY_RETIRE, detail, exc)
            raise
        await self._reload()
        await self._record(actor, ACTION_KEY_RETIRE, detail)


def _rewrap_detail(batch: int, rate: float) -> dict[str, str]:
    return {"batch": str(batch), "rate": str(rate)}
