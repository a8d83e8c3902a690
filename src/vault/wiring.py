"""The composition root: the one place that picks concrete classes.

It opens the store (SQLite or PostgreSQL, by config), the subject-key store and the
master key, builds the audit trail, the key material and the domain services with the
configured limits. ``serve`` (server.py), ``--workers`` (workers.py) and every vaultctl
command get their object graph from here; CLI commands through ``opened(...)``, an async
context manager that closes what it opened. No grpc here: a command that does not serve
never imports it.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import resource
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from vault import metrics
from vault.audit.base import ACTION_CALLER_ADD, OUTCOME_OK, AuditEvent
from vault.audit.trail import AuditTrail, JsonLinesExporter
from vault.auth.apikeys import hash_secret, mint_api_key
from vault.auth.policy import ALL_SCOPES
from vault.auth.transport import TLS_REQUIRED, is_local_address
from vault.clock import Clock, SystemClock
from vault.config import Config
from vault.crypto.base import KekProvider
from vault.crypto.kekring import KekRing
from vault.crypto.keyfile import KeyFileKek
from vault.domain.auditing import UseCaseAudit
from vault.domain.callers import EventRecorder
from vault.domain.ephemeral import EphemeralStore
from vault.domain.keys import KeyMaterial, init_keyring
from vault.domain.subject_keys import SubjectKeys
from vault.domain.tokenize import TokenizeRules
from vault.domain.usecases import UseCases, build_use_cases
from vault.domain.validation import Limits, Validator
from vault.errors import AlreadyExistsError, FailedPreconditionError
from vault.forward.base import ProcessorClient
from vault.forward.filtering import AnswerFilter
from vault.forward.routes import RouteSecrets
from vault.forward.table import RouteTable
from vault.forward.usecase import Forward
from vault.master_key import open_kek, open_pkcs11
from vault.storage.base import CallerRow, Store, SubjectKeyStore
from vault.storage.postgres import PostgresStore, is_postgres_url, same_database
from vault.storage.sqlite import SqliteStore
from vault.storage.subject_keys_postgres import PostgresSubjectKeyStore
from vault.storage.subject_keys_sqlite import SqliteSubjectKeyStore

__all__ = [
    "DEV_ACTOR",
    "DEV_CALLER",
    "DEV_TENANT",
    "KeyedVault",
    "OpenedVault",
    "ShareReader",
    "build_forward",
    "build_services",
    "check_data_dir",
    "check_dev_store",
    "check_listen",
    "create_dev_caller",
    "harden_process",
    "init_data_dir",
    "limits",
    "open_audit_trail",
    "open_keyed",
    "open_store",
    "open_subject_key_store",
    "opened",
]

DEV_CALLER = "dev"
DEV_TENANT = "default"
_SQLITE = "sqlite://"
# Who the trail names for what `serve --dev` does by itself.
DEV_ACTOR = "vaultctl serve --dev"

log = logging.getLogger(__name__)

# Rebuilds a split master key (kek_provider = shares) from custodian shares; None when
# no shares were offered (the vault is then sealed for the command).
ShareReader = Callable[[Store], Awaitable[KekProvider | None]]


def harden_process() -> None:
    """No core dumps, and (on Linux) no ptrace by other processes of the same user: a dump
    or a debugger would see CVCs held in memory, unwrapped keys and custodian shares.
    Files the process creates are 0600 and directories 0700 (umask 077): the SQLite
    database and its -wal/-shm, subject-keys.db, key files, dev-api-key, exports."""
    os.umask(0o077)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if sys.platform == "linux":
        pr_set_dumpable = 4
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(pr_set_dumpable, 0, 0, 0, 0)


def check_data_dir(config: Config) -> None:
    """A data dir group or others can enter is refused: it holds the master key file,
    the database and the dev key (a missing one is created 0700 later)."""
    path = config.data_dir
    with contextlib.suppress(FileNotFoundError):
        if path.stat().st_mode & 0o077:
            raise FailedPreconditionError(
                "the data dir is accessible by group or others; chmod 700 it",
                reason="DATA_DIR_PERMISSIONS",
            )


def check_listen(config: Config, *, tls: bool) -> None:
    """Plaintext only on loopback (or with insecure_plaintext, warned about); --dev only
    on loopback, TLS or not. The HTTP/JSON port (http_listen) follows the same rule: it
    speaks TLS exactly when the gRPC port does."""
    addresses = [a for a in (config.listen, config.http_listen) if a]
    remote = [a for a in addresses if not is_local_address(a)]
    if not remote:
        return
    if config.dev:
        raise FailedPreconditionError(
            "--dev serves on a loopback address only (e.g. 127.0.0.1:50051)",
            reason="DEV_NOT_LOOPBACK",
        )
    if tls:
        return
    if not config.insecure_plaintext:
        raise FailedPreconditionError(
            "a non-loopback listen address needs TLS (--tls-cert/--tls-key), or "
            "--insecure-plaintext behind a TLS-terminating proxy on the same host",
            reason=TLS_REQUIRED,
        )
    log.warning(
        "serving plaintext on a non-loopback address (insecure_plaintext): calls carrying "
        "a credential from other hosts are refused; terminate TLS on this host"
    )


async def check_dev_store(config: Config, store: Store) -> None:
    """--dev serves a store it created, or an empty one (and then marks the data dir):
    never a real vault whose data dir someone started with --dev by mistake."""
    if not config.dev or config.dev_marker_path.exists():
        return
    if await store.key_versions() or await store.callers():
        raise FailedPreconditionError(
            "--dev serves only a vault --dev created; this store was not (serve it without --dev)",
            reason="DEV_STORE",
        )
    config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(config.dev_marker_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("created by vaultctl serve --dev: a development vault, never production\n")


def limits(config: Config) -> Limits:
    """The request limits the configuration sets (the same for serve and every command)."""
    return Limits(
        max_batch=config.max_batch,
        cvc_ttl_seconds=config.cvc_ttl,
        cvc_reveals=config.cvc_reveals,
    )


def open_store(config: Config) -> Store:
    """The store config.database_url names (unopened): SQLite in the data dir by default."""
    url = config.database_url
    if not url:
        return SqliteStore(config.database_path, on_commit=metrics.COMMIT_BATCH.observe)
    if url.startswith(_SQLITE + "/"):
        return SqliteStore(Path(url.removeprefix(_SQLITE)), on_commit=metrics.COMMIT_BATCH.observe)
    if is_postgres_url(url):
        return PostgresStore(url, on_commit=metrics.COMMIT_BATCH.observe)
    raise FailedPreconditionError(
        "database_url must start with postgresql:// or sqlite:///", reason="BAD_CONFIG"
    )


def open_subject_key_store(config: Config) -> SubjectKeyStore:
    """The subject-key store (unopened): subject-keys.db in the data dir by default; with
    a PostgreSQL store, the separate database subject_key_database_url names (a local
    file would be invisible to the other replicas)."""
    url = config.subject_key_database_url
    if is_postgres_url(config.database_url):
        if not is_postgres_url(url):
            raise FailedPreconditionError(
                "a PostgreSQL database_url needs subject_key_database_url: postgresql://… "
                "of a separate database, left out of the main one's backups",
                reason="BAD_CONFIG",
            )
        if same_database(url, config.database_url):
            raise FailedPreconditionError(
                "subject_key_database_url must name another database than database_url",
                reason="BAD_CONFIG",
            )
    if not url:
        return SqliteSubjectKeyStore(config.subject_keys_path)
    if url.startswith(_SQLITE + "/"):
        return SqliteSubjectKeyStore(Path(url.removeprefix(_SQLITE)))
    if is_postgres_url(url):
        return PostgresSubjectKeyStore(url)
    raise FailedPreconditionError(
        "subject_key_database_url must start with postgresql:// or sqlite:///",
        reason="BAD_CONFIG",
    )


async def init_data_dir(config: Config, store: Store, clock: Clock) -> bool:
    """The master key (a key file, or a key on the HSM) and data-key version 1, if absent.
    True if anything was created. Custodian shares are made by `keys init --shares`."""
    config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    created = False
    kek: KekProvider
    if config.kek_provider == "pkcs11":
        kek = open_pkcs11(config, create=True)
    elif config.kek_provider == "shares":
        raise FailedPreconditionError(
            "a split master key is made by `vaultctl keys init --shares N --threshold K`",
            reason="BAD_CONFIG",
        )
    else:
        if not config.master_key_path.exists():
            if await store.key_versions():
                raise FailedPreconditionError(
                    "the store has data keys but the master key file is missing",
                    reason="MASTER_KEY_MISSING",
                )
            KeyFileKek.create(config.master_key_path)
            created = True
        kek = KeyFileKek.load(config.master_key_path)
    created |= await init_keyring(store, kek, clock)
    return created


async def create_dev_caller(
    config: Config, store: Store, clock: Clock, trail: EventRecorder
) -> str | None:
    """The dev API key (every scope), written 0600 to the data dir and recorded in the
    audit trail; None if the dev caller exists."""
    if any(row.name == DEV_CALLER for row in await store.callers()):
        return None
    key = mint_api_key()
    try:
        await store.add_caller(
            CallerRow(
                name=DEV_CALLER,
                tenant=DEV_TENANT,
                scopes=ALL_SCOPES,
                key_id=key.key_id,
                key_hash=hash_secret(key.secret),
                created_at=clock.now(),
                expires_at=None,
                revoked_at=None,
                # The dev key has every scope (a reveal of anything already); a budget
                # would only slow local benchmarks down.
                tokenize_rate=0.0,
            )
        )
    except AlreadyExistsError:
        return None
    await trail.record(
        [
            AuditEvent(
                clock.now(),
                DEV_ACTOR,
                DEV_TENANT,
                ACTION_CALLER_ADD,
                outcome=OUTCOME_OK,
                detail={"name": DEV_CALLER, "scopes": ",".join(ALL_SCOPES), "dev": "true"},
            )
        ]
    )
    path = config.dev_key_path
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key.text + "\n")
    return key.text


def build_services(
    config: Config,
    store: Store,
    keys: KeyMaterial,
    clock: Clock,
    *,
    audit: AuditTrail,
    subject_keys: SubjectKeys,
    on_encrypt: Callable[[int, int], None] | None = None,
) -> UseCases:
    """The use cases, with the configured limits: the one place that constructs them."""
    return build_use_cases(
        store,
        keys,
        clock,
        limits(config),
        audit=audit,
        on_encrypt=on_encrypt,
        subject_keys=subject_keys,
        cvc_memory=EphemeralStore(
            clock, budget_bytes=config.cvc_memory_bytes, tenant_share=config.cvc_tenant_share
        ),
        tokenize_rules=TokenizeRules(config.min_ttl, config.tokenize_rate, config.tokenize_burst),
        volume_window=config.tokenize_audit_window,
    )


def build_forward(
    config: Config,
    store: Store,
    keys: KeyMaterial,
    services: UseCases,
    clock: Clock,
    *,
    audit: AuditTrail,
    client: ProcessorClient | None = None,
) -> Forward:
    """The Forward use case over the store's routes, with the httpx client unless one is
    given; the client is the caller's to close (Forward.close)."""
    if client is None:
        # Only a serving process needs the HTTP client: commands do not import it.
        from vault.forward.http import HttpxProcessorClient  # noqa: PLC0415

        client = HttpxProcessorClient()
    table = RouteTable(
        store,
        lambda: RouteSecrets.open(store, keys.kek, clock, create=False),
        refresh_seconds=config.route_refresh_interval,
        on_reload=client.retain,  # a removed route's connections are closed
    )
    return Forward(
        table,
        client,
        services.reveal,
        AnswerFilter(services.tokenize),
        Validator(services.limits),
        UseCaseAudit(audit, clock, services.limits),
        clock,
    )


async def open_audit_trail(
    config: Config, store: Store, kek: KekProvider, clock: Clock, *, create: bool, serving: bool
) -> AuditTrail:
    """The audit trail under the master key. A command (``serving`` False) exports to
    files only: a sink on stdout would mix records into the command's own output."""
    sink = config.audit_sink
    exporter = JsonLinesExporter.from_setting(sink) if serving or sink != "stdout" else None
    trail = await AuditTrail.open(store, kek, clock, exporter, create=create)
    trail.head_interval = config.audit_head_interval
    return trail


@dataclass(frozen=True, slots=True)
class KeyedVault:
    """What the master key opens: the data keys, the audit trail and the services."""

    keys: KeyMaterial
    audit: AuditTrail
    services: UseCases


async def open_keyed(
    config: Config,
    store: Store,
    subject_key_store: SubjectKeyStore,
    kek: KekProvider,
    clock: Clock,
    *,
    serving: bool,
    on_encrypt: Callable[[int, int], None] | None = None,
) -> KeyedVault:
    """Keys, audit trail and services under the master key; raises (the trail closed)
    if the data keys do not unwrap. The caller closes ``audit``."""
    keys = KeyMaterial(store, kek, clock)
    await keys.load()
    audit = await open_audit_trail(config, store, kek, clock, create=True, serving=serving)
    try:
        subject_keys = await SubjectKeys.open(store, subject_key_store, kek, clock)
    except BaseException:
        audit.close()
        raise
    services = build_services(
        config, store, keys, clock, audit=audit, subject_keys=subject_keys, on_encrypt=on_encrypt
    )
    return KeyedVault(keys, audit, services)


@dataclass
class OpenedVault:
    """What a vaultctl command works on: the opened store and, on demand, the master key,
    the operator's audit trail and the services. ``opened`` closes it all."""

    config: Config
    store: Store
    clock: Clock
    read_shares: ShareReader | None = None
    _kek: KekRing | None = None
    _closing: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack)

    async def master_key(self) -> KekRing:
        """The configured master key (with any other the store's rows still name); with
        kek_provider = shares, rebuilt once from the offered shares."""
        if self._kek is None:
            shares = None
            if self.config.kek_provider == "shares" and self.read_shares is not None:
                shares = await self.read_shares(self.store)
            self._kek = await open_kek(self.config, self.store, shares)
        return self._kek

    async def audit_trail(self, *, create: bool = True) -> AuditTrail:
        """The audit trail under the master key, closed with the vault."""
        trail = await open_audit_trail(
            self.config,
            self.store,
            await self.master_key(),
            self.clock,
            create=create,
            serving=False,
        )
        self._closing.callback(trail.close)
        return trail

    async def services(self) -> UseCases:
        """The domain services (keys loaded, subject-key store opened), as ``serve`` has."""
        kek = await self.master_key()
        key_store = open_subject_key_store(self.config)
        await key_store.open()
        self._closing.push_async_callback(key_store.close)
        keyed = await open_keyed(self.config, self.store, key_store, kek, self.clock, serving=False)
        self._closing.callback(keyed.audit.close)
        return keyed.services


@contextlib.asynccontextmanager
async def opened(
    config: Config,
    *,
    need_keys: bool = False,
    read_shares: ShareReader | None = None,
    clock: Clock | None = None,
) -> AsyncIterator[OpenedVault]:
    """The configured store, opened (migrations run) and closed on exit; with
    ``need_keys`` the master key is loaded first, so a command that cannot have it (or
    record what it does) fails before it changes anything."""
    store = open_store(config)
    await store.open()
    vault = OpenedVault(config, store, clock or SystemClock(), read_shares)
    try:
        async with vault._closing:  # noqa: SLF001 - the context manager owns its exit stack
            if need_keys:
                await vault.master_key()
            yield vault
    finally:
        await store.close()
