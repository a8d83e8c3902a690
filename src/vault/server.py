"""The composition root: picks the concrete store, master key and clock, wires the layers,
runs the gRPC server and the background jobs, and drains on stop."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import resource
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc
from grpc_reflection.v1alpha._async import ReflectionServicer
from prometheus_client import start_http_server

from vault import metrics
from vault.api.rpc import add_service
from vault.api.subject_service import SUBJECT_SERVICE, SubjectServicer
from vault.api.token_service import TOKEN_SERVICE as TOKEN_SERVICE_DESCRIPTOR
from vault.api.token_service import TokenServicer
from vault.audit.trail import AuditTrail, JsonLinesExporter
from vault.auth.apikeys import Authenticator, hash_secret, mint_api_key
from vault.auth.mtls import TlsMaterial, load_tls_material
from vault.auth.policy import ALL_SCOPES
from vault.clock import Clock, SystemClock
from vault.config import Config
from vault.crypto.keyfile import KeyFileKek
from vault.domain.keys import KeyMaterial, init_keyring
from vault.domain.retention import purge_retained
from vault.domain.subject_keys import SubjectKeys
from vault.domain.subjects import SubjectRequests
from vault.domain.tokens import Limits, TokenVault
from vault.errors import AlreadyExistsError, FailedPreconditionError
from vault.storage.base import CallerRow, Store, SubjectKeyStore
from vault.storage.sqlite import SqliteStore
from vault.storage.subject_keys_sqlite import SqliteSubjectKeyStore

__all__ = [
    "DEV_CALLER",
    "VaultServer",
    "create_dev_caller",
    "harden_process",
    "init_data_dir",
    "open_store",
    "open_subject_key_store",
]

log = logging.getLogger(__name__)

DEV_CALLER = "dev"
DEV_TENANT = "default"
TOKEN_SERVICE = TOKEN_SERVICE_DESCRIPTOR.full_name
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
# grpcio-reflection serves v1alpha only; v1 has the same messages on the wire, so the
# same servicer is registered under the v1 name too (buf curl asks for v1 first).
REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"


def harden_process() -> None:
    """No core dumps, and (on Linux) no ptrace by other processes of the same user: a dump
    or a debugger would see CVCs held in memory and unwrapped keys."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if sys.platform == "linux":
        pr_set_dumpable = 4
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(pr_set_dumpable, 0, 0, 0, 0)


def open_store(config: Config) -> Store:
    return SqliteStore(config.database_path, on_commit=metrics.COMMIT_BATCH.observe)


def open_subject_key_store(config: Config) -> SubjectKeyStore:
    return SqliteSubjectKeyStore(config.subject_keys_path)


def _check_data_dir(path: Path) -> None:
    if path.exists() and path.stat().st_mode & 0o077 and (path / "vault.db").exists():
        log.warning("data dir is accessible by group or others; chmod 700 recommended")


async def init_data_dir(config: Config, store: Store, clock: Clock) -> bool:
    """Master key file and data-key version 1, if absent. True if anything was created."""
    config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    created = False
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


async def create_dev_caller(config: Config, store: Store, clock: Clock) -> str | None:
    """The dev API key (every scope), written 0600 to the data dir; None if one exists."""
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
            )
        )
    except AlreadyExistsError:
        return None
    path = config.dev_key_path
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key.text + "\n")
    return key.text


def _server_credentials(tls: TlsMaterial) -> grpc.ServerCredentials:
    """TLS; with a client CA, mTLS: the handshake refuses a client without a certificate
    that chains to it (expired, other CA, none), before any handler runs."""
    return grpc.ssl_server_credentials(
        [(tls.private_key, tls.cert_chain)],
        root_certificates=tls.client_ca,
        require_client_auth=tls.client_ca is not None,
    )


@dataclass
class _Running:
    server: grpc.aio.Server
    health: HealthServicer
    tasks: list[asyncio.Task[None]]
    metrics_server: Any


class VaultServer:
    """One vault process: ``await start()``, then ``await stop()`` (or run until SIGTERM)."""

    def __init__(self, config: Config, clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.store: Store = open_store(config)
        self.subject_key_store: SubjectKeyStore = open_subject_key_store(config)
        self.port = 0
        self.metrics_port = 0
        self.dev_key: str | None = None
        self._running: _Running | None = None
        self._stopped = asyncio.Event()
        self.keys: KeyMaterial | None = None
        self.vault: TokenVault | None = None
        self.audit: AuditTrail | None = None

    async def start(self) -> None:
        cfg = self.config
        _check_data_dir(cfg.data_dir)
        if not cfg.dev and not cfg.master_key_path.exists():
            raise FailedPreconditionError(
                "no master key in the data dir: run `vaultctl keys init` or serve with --dev",
                reason="MASTER_KEY_MISSING",
            )
        # Refuse a readable key file (or bad TLS files) before touching the store.
        if cfg.master_key_path.exists():
            KeyFileKek.load(cfg.master_key_path)
        tls = load_tls_material(cfg.tls_cert, cfg.tls_key, cfg.client_ca)
        await self.store.open()
        try:
            await self.subject_key_store.open()
            if cfg.dev:
                await init_data_dir(cfg, self.store, self.clock)
                self.dev_key = await create_dev_caller(cfg, self.store, self.clock)
            kek = KeyFileKek.load(cfg.master_key_path)
            self.keys = KeyMaterial(self.store, kek, self.clock)
            await self.keys.load()
            self.audit = await AuditTrail.open(
                self.store, kek, self.clock, JsonLinesExporter.from_setting(cfg.audit_sink)
            )
            self.vault = TokenVault(
                self.store,
                self.keys,
                self.clock,
                Limits(
                    max_batch=cfg.max_batch,
                    cvc_ttl_seconds=cfg.cvc_ttl,
                    cvc_reveals=cfg.cvc_reveals,
                ),
                audit=self.audit,
                subject_keys=await SubjectKeys.open(
                    self.store, self.subject_key_store, kek, self.clock
                ),
            )
            await self._start_grpc(Authenticator(self.store, self.clock), tls)
        except BaseException:
            await self.store.close()
            await self.subject_key_store.close()
            if self.audit is not None:
                self.audit.close()
            raise

    async def _start_grpc(self, authenticator: Authenticator, tls: TlsMaterial | None) -> None:
        cfg = self.config
        assert self.vault is not None  # noqa: S101 - set by start()
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", cfg.max_message_bytes),
                ("grpc.max_send_message_length", 4 * cfg.max_message_bytes),
                # Headers up to 64 KiB reach the handler, so an oversized credential is
                # refused as UNAUTHENTICATED and audited; beyond that the transport
                # refuses the call before any handler runs (RESOURCE_EXHAUSTED).
                ("grpc.max_metadata_size", 64 * 1024),
                # One process per port unless --workers asks for sharing.
                ("grpc.so_reuseport", 1 if cfg.workers > 1 else 0),
            ]
        )
        servicer = TokenServicer(self.vault, authenticator, self.audit, self.clock)
        add_service(server, TOKEN_SERVICE_DESCRIPTOR, servicer)
        assert self.keys is not None  # noqa: S101 - set by start()
        subjects = SubjectRequests(self.vault, self.store, self.keys, self.clock, self.audit)
        add_service(
            server,
            SUBJECT_SERVICE,
            SubjectServicer(subjects, authenticator, self.audit, self.clock),
        )
        health = HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health, server)
        # REFLECTION_V1 is served (below) but not listed: the v1alpha descriptors are the
        # only ones grpcio-reflection ships, and a listed service must be describable.
        names = [TOKEN_SERVICE, SUBJECT_SERVICE.full_name, HEALTH_SERVICE, reflection.SERVICE_NAME]
        reflector = ReflectionServicer(names)
        reflection_pb2_grpc.add_ServerReflectionServicer_to_server(reflector, server)
        server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    REFLECTION_V1,
                    {
                        "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
                            reflector.ServerReflectionInfo,
                            request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
                            response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
                        )
                    },
                ),
            )
        )
        try:
            if tls is None:
                self.port = server.add_insecure_port(cfg.listen)
            else:
                self.port = server.add_secure_port(cfg.listen, _server_credentials(tls))
        except RuntimeError:
            raise FailedPreconditionError(
                "cannot listen on the configured address", reason="LISTEN_FAILED"
            ) from None
        await server.start()
        metrics_server = None
        if cfg.metrics_listen:
            host, _, port = cfg.metrics_listen.rpartition(":")
            try:
                metrics_server, _thread = start_http_server(int(port), addr=host or "127.0.0.1")
            except (OSError, ValueError):
                await server.stop(None)
                raise FailedPreconditionError(
                    "cannot listen on the metrics address", reason="LISTEN_FAILED"
                ) from None
            self.metrics_port = metrics_server.server_port
        tasks = [
            asyncio.create_task(self._every(cfg.purge_interval, self._purge), name="ttl-purge"),
            asyncio.create_task(
                self._every(cfg.key_refresh_interval, self._refresh_keys), name="key-refresh"
            ),
            asyncio.create_task(
                self._every(cfg.retention_interval, self._retention), name="retention-purge"
            ),
        ]
        self._running = _Running(server, health, tasks, metrics_server)
        # SERVING only now: migrations ran and the keys are loaded.
        await health.set("", health_pb2.HealthCheckResponse.SERVING)
        await health.set(TOKEN_SERVICE, health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "vault serving on port %d (%s)",
            self.port,
            "plaintext" if tls is None else "mTLS" if tls.client_ca else "TLS",
        )

    async def _every(self, seconds: float, job: Any) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await job()
            except Exception as exc:  # noqa: BLE001 - a background job must keep running
                log.warning("background job failed: %s", type(exc).__name__)

    async def _purge(self) -> None:
        assert self.vault is not None  # noqa: S101
        purged = await self.vault.purge_expired()
        if purged:
            log.info("purged %d expired tokens", purged)

    async def _retention(self) -> None:
        for purged in await purge_retained(self.store, self.clock, self.audit):
            log.info("retention purged %d %s values", purged.count, purged.kind.name)

    async def _refresh_keys(self) -> None:
        assert self.keys is not None  # noqa: S101
        await self.keys.load()
        for row in await self.store.key_versions():
            metrics.KEY_ENCRYPTIONS.labels(str(row.version)).set(row.encryptions)

    async def stop(self, grace: float | None = None) -> None:
        """Refuse new calls, let in-flight ones finish, flush commits, close the store."""
        running, self._running = self._running, None
        if running is not None:
            await running.health.enter_graceful_shutdown()
            await running.server.stop(self.config.shutdown_grace if grace is None else grace)
            for task in running.tasks:
                task.cancel()
            await asyncio.gather(*running.tasks, return_exceptions=True)
            if running.metrics_server is not None:
                running.metrics_server.shutdown()
                running.metrics_server.server_close()
        await self.store.close()
        await self.subject_key_store.close()
        if self.audit is not None:
            self.audit.close()
        self._stopped.set()
        log.info("vault stopped")

    async def wait_stopped(self) -> None:
        await self._stopped.wait()
