"""The gRPC lifecycle of one vault process: the server and its servicers, health,
reflection, the metrics port, the seal gates, the named background jobs, and the drain
on stop. What it serves is built by the composition root (wiring.py)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc
from grpc_reflection.v1alpha._async import ReflectionServicer
from prometheus_client import start_http_server

from vault import tracing
from vault.api.forward_service import FORWARD_SERVICE as FORWARD_SERVICE_DESCRIPTOR
from vault.api.forward_service import ForwardServicer
from vault.api.http import HttpGateway, HttpServer, HttpTls
from vault.api.key_service import KEY_SERVICE as KEY_SERVICE_DESCRIPTOR
from vault.api.key_service import KeyServicer
from vault.api.rpc import add_service, connection_options
from vault.api.seal_service import SEAL_SERVICE as SEAL_SERVICE_DESCRIPTOR
from vault.api.seal_service import SealedGate, SealServicer
from vault.api.subject_service import SUBJECT_SERVICE, SubjectServicer
from vault.api.token_service import TOKEN_SERVICE as TOKEN_SERVICE_DESCRIPTOR
from vault.api.token_service import TokenServicer
from vault.audit.refusals import RefusalLog
from vault.audit.trail import AuditTrail
from vault.auth.apikeys import Authenticator
from vault.auth.mtls import TlsMaterial, load_tls_material
from vault.auth.ratelimit import PeerRefusalLimiter
from vault.clock import Clock, SystemClock
from vault.config import Config
from vault.crypto.base import KekProvider
from vault.crypto.kekring import KekRing
from vault.crypto.keyfile import KeyFileKek
from vault.domain.keyops import (
    AutoRotation,
    KeyMetrics,
    KeyOperations,
    RotationLimits,
    UsageWatch,
)
from vault.domain.keys import KeyMaterial
from vault.domain.retention import purge_retained
from vault.domain.unseal import Unsealer
from vault.domain.usecases import UseCases
from vault.errors import FailedPreconditionError
from vault.forward.usecase import Forward
from vault.jobs import LeasedJob
from vault.master_key import open_kek
from vault.storage.base import KeyVersionRow, Store, SubjectKeyStore
from vault.wiring import (
    build_forward,
    check_data_dir,
    check_dev_store,
    check_listen,
    create_dev_caller,
    init_data_dir,
    open_keyed,
    open_store,
    open_subject_key_store,
)

__all__ = ["KEYED_SERVICES", "TOKEN_SERVICE", "VaultServer"]

log = logging.getLogger(__name__)

TOKEN_SERVICE = TOKEN_SERVICE_DESCRIPTOR.full_name
KEY_SERVICE = KEY_SERVICE_DESCRIPTOR.full_name
SEAL_SERVICE = SEAL_SERVICE_DESCRIPTOR.full_name
FORWARD_SERVICE = FORWARD_SERVICE_DESCRIPTOR.full_name
# What health reports NOT_SERVING while sealed (readiness); "" is SERVING (liveness).
KEYED_SERVICES = (TOKEN_SERVICE, KEY_SERVICE, SUBJECT_SERVICE.full_name, FORWARD_SERVICE)
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
# grpcio-reflection serves v1alpha only; v1 has the same messages on the wire, so the
# same servicer is registered under the v1 name too (buf curl asks for v1 first).
REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"


def _server_credentials(tls: TlsMaterial) -> grpc.ServerCredentials:
    """TLS; with a client CA, mTLS: the handshake refuses a client without a certificate
    that chains to it (expired, other CA, none), before any handler runs."""
    return grpc.ssl_server_credentials(
        [(tls.private_key, tls.cert_chain)],
        root_certificates=tls.client_ca,
        require_client_auth=tls.client_ca is not None,
    )


@dataclass(frozen=True, slots=True)
class _Jobs:
    """The background jobs held under a lease, by name."""

    ttl_purge: LeasedJob
    key_auto_rotate: LeasedJob
    retention_purge: LeasedJob

    def all(self) -> tuple[LeasedJob, ...]:
        return (self.ttl_purge, self.key_auto_rotate, self.retention_purge)


@dataclass
class _Running:
    server: grpc.aio.Server
    health: HealthServicer
    tasks: list[asyncio.Task[None]]
    metrics_server: Any
    gates: dict[str, SealedGate]  # the key-holding services while sealed, by name
    authenticator: Authenticator
    http: HttpServer | None = None


class VaultServer:
    """One vault process: ``await start()``, then ``await stop()`` (or run until SIGTERM)."""

    def __init__(self, config: Config, clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        tracing.configure()  # OTEL_* (off by default): before anything it wraps
        self.store: Store = tracing.traced_store(open_store(config))
        self.subject_key_store: SubjectKeyStore = open_subject_key_store(config)
        self.port = 0
        self.metrics_port = 0
        self.http_port = 0
        self.dev_key: str | None = None
        self._running: _Running | None = None
        self._stopped = asyncio.Event()
        self.keys: KeyMaterial | None = None
        self.vault: UseCases | None = None
        self.audit: AuditTrail | None = None
        self.forward: Forward | None = None
        self.key_ops: KeyOperations | None = None
        self.rotation_limits = RotationLimits(config.key_max_age, config.key_max_encryptions)
        self.usage = UsageWatch(config.key_max_encryptions)
        self._key_metrics = KeyMetrics()
        self.unsealer = Unsealer(None)
        self.seal_servicer: SealServicer | None = None
        # One replica at a time runs each of these (a lease in the store).
        self.jobs = _Jobs(
            ttl_purge=LeasedJob(
                self.store, self.clock, "ttl-purge", config.purge_interval, self._purge
            ),
            key_auto_rotate=LeasedJob(
                self.store,
                self.clock,
                "key-auto-rotate",
                config.key_refresh_interval,
                self._auto_rotate_checked,
            ),
            retention_purge=LeasedJob(
                self.store,
                self.clock,
                "retention-purge",
                config.retention_interval,
                self._retention,
            ),
        )

    async def start(self) -> None:
        cfg = self.config
        check_data_dir(cfg)
        file_kek = cfg.kek_provider == "file"
        if file_kek and not cfg.dev and not cfg.master_key_path.exists():
            raise FailedPreconditionError(
                "no master key in the data dir: run `vaultctl keys init` or serve with --dev",
                reason="MASTER_KEY_MISSING",
            )
        if cfg.kek_provider == "shares" and (cfg.dev or cfg.workers > 1):
            raise FailedPreconditionError(
                "kek_provider shares needs one server process per unseal (no --dev, --workers)",
                reason="BAD_CONFIG",
            )
        # Refuse a readable key file (or bad TLS files) before touching the store.
        if file_kek and cfg.master_key_path.exists():
            KeyFileKek.load(cfg.master_key_path)
        tls = load_tls_material(cfg.tls_cert, cfg.tls_key, cfg.client_ca)
        check_listen(cfg, tls=tls is not None)
        await self.store.open()
        try:
            await self.subject_key_store.open()
            if cfg.dev:
                await check_dev_store(cfg, self.store)
                await init_data_dir(cfg, self.store, self.clock)
            if cfg.kek_provider == "shares":
                self.unsealer = Unsealer(await self.store.share_scheme())
                if not self.unsealer.progress().sealed:
                    raise FailedPreconditionError(  # noqa: TRY301 - cleaned up below
                        "kek_provider is shares but the store's master key is not split "
                        "(run `vaultctl keys init --shares N --threshold K`)",
                        reason="BAD_CONFIG",
                    )
            else:
                audit = await self._load_keys(await open_kek(cfg, self.store))
                if cfg.dev:
                    self.dev_key = await create_dev_caller(cfg, self.store, self.clock, audit)
            await self._start_grpc(
                Authenticator(
                    self.store,
                    self.clock,
                    refusals=RefusalLog(self.clock, cfg.refusal_audit_window),
                    limiter=PeerRefusalLimiter(self.clock, cfg.refusal_rate, cfg.refusal_burst),
                ),
                tls,
            )
        except BaseException:
            await self.store.close()
            await self.subject_key_store.close()
            if self.audit is not None:
                self.audit.close()
            raise

    async def _load_keys(self, kek: KekProvider) -> AuditTrail:
        """Keys, audit trail and use cases under the master key; raises (nothing kept) if
        the data keys do not unwrap."""
        cfg = self.config
        keyed = await open_keyed(
            cfg,
            self.store,
            self.subject_key_store,
            kek,
            self.clock,
            serving=True,
            on_encrypt=self.usage.encrypted,
        )
        self.keys, self.audit, self.vault = keyed.keys, keyed.audit, keyed.services
        self.forward = build_forward(
            cfg, self.store, keyed.keys, keyed.services, self.clock, audit=keyed.audit
        )
        self.key_ops = KeyOperations(
            self.store,
            kek,
            self.clock,
            keyed.audit,
            reload_keys=self._reload_keys,
            key_metrics=self._key_metrics,
        )
        await self._refresh_keys()
        return keyed.audit

    async def _unseal(self, kek: KekProvider) -> AuditTrail:
        """SealService's last share: load under the rebuilt key, then serve tokens."""
        audit = await self._load_keys(kek)
        running = self._running
        assert running is not None  # noqa: S101 - serving sealed
        assert self.vault is not None  # noqa: S101 - just loaded
        for name, servicer in self._servicers(running.authenticator).items():
            running.gates[name].open(servicer)
        running.tasks.extend(self._background_tasks())
        for name in KEYED_SERVICES:
            await running.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("vault unsealed")
        return audit

    def _background_tasks(self) -> list[asyncio.Task[None]]:
        cfg = self.config
        return [
            asyncio.create_task(
                self._every(cfg.purge_interval, self.jobs.ttl_purge), name="ttl-purge"
            ),
            asyncio.create_task(
                self._every(cfg.key_refresh_interval, self._refresh_keys), name="key-refresh"
            ),
            asyncio.create_task(self._auto_rotate_loop(), name="key-auto-rotate"),
            asyncio.create_task(
                self._every(cfg.retention_interval, self.jobs.retention_purge),
                name="retention-purge",
            ),
        ]

    def _servicers(self, authenticator: Authenticator) -> dict[str, object]:
        """The services that need the keys, by full name (built once the keys are loaded)."""
        assert self.vault is not None  # noqa: S101 - keys loaded
        assert self.key_ops is not None  # noqa: S101
        assert self.keys is not None  # noqa: S101
        assert self.forward is not None  # noqa: S101
        return {
            TOKEN_SERVICE: TokenServicer(self.vault, authenticator, self.audit, self.clock),
            KEY_SERVICE: KeyServicer(
                self.key_ops,
                authenticator,
                self.audit,
                self.clock,
                # Servers load a new primary within one refresh; a rewrap waits that out.
                settle_seconds=self.config.key_refresh_interval + 1.0,
            ),
            SUBJECT_SERVICE.full_name: SubjectServicer(
                self.vault.subjects,
                authenticator,
                self.audit,
                self.clock,
            ),
            FORWARD_SERVICE: ForwardServicer(self.forward, authenticator, self.audit, self.clock),
        }

    async def _start_grpc(self, authenticator: Authenticator, tls: TlsMaterial | None) -> None:
        cfg = self.config
        server = _grpc_server(cfg)
        gates, gateway = self._add_services(server, authenticator)
        health = HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health, server)
        _add_reflection(server)
        self.port = _listen(server, cfg.listen, tls)
        await server.start()
        http = await self._start_http(gateway, server, tls is not None)
        metrics_server = await _start_metrics(cfg.metrics_listen, server, http)
        if metrics_server is not None:
            self.metrics_port = metrics_server.server_port
        sealed = self.vault is None
        tasks = [] if sealed else self._background_tasks()
        self._running = _Running(server, health, tasks, metrics_server, gates, authenticator, http)
        # What start-up built lives as long as the process (modules, keys, the grpc
        # server): frozen out of the collector's sight, a full collection under load scans
        # only what calls made (before: a ~35 ms pause every few thousand calls, a p99 spike).
        gc.freeze()
        await _announce(health, self.port, tls, sealed=sealed)

    def _add_services(
        self, server: grpc.aio.Server, authenticator: Authenticator
    ) -> tuple[dict[str, SealedGate], HttpGateway]:
        """Every vault service on ``server`` and on the HTTP/JSON gateway; the gates that
        stand in for the key-holding ones while sealed."""
        cfg = self.config
        # Sealed (kek_provider = shares), the key-holding services answer VAULT_SEALED
        # through their gates until the last share; otherwise they serve directly.
        gates: dict[str, SealedGate] = {}
        servicers = self._servicers(authenticator) if self.vault is not None else None
        # The HTTP/JSON port (--http-listen) serves the very servicers (or gates) grpc does.
        gateway = HttpGateway(cfg.max_message_bytes)
        for descriptor in (
            TOKEN_SERVICE_DESCRIPTOR,
            KEY_SERVICE_DESCRIPTOR,
            SUBJECT_SERVICE,
            FORWARD_SERVICE_DESCRIPTOR,
        ):
            if servicers is None:
                gates[descriptor.full_name] = gate = SealedGate()
                add_service(server, descriptor, gate)
                gateway.add_service(descriptor, gate)
            else:
                add_service(server, descriptor, servicers[descriptor.full_name])
                gateway.add_service(descriptor, servicers[descriptor.full_name])
        self.seal_servicer = SealServicer(
            authenticator, self.clock, self.unsealer, self._unseal, self.audit
        )
        add_service(server, SEAL_SERVICE_DESCRIPTOR, self.seal_servicer)
        gateway.add_service(SEAL_SERVICE_DESCRIPTOR, self.seal_servicer)
        return gates, gateway

    async def _start_http(
        self, gateway: HttpGateway, server: grpc.aio.Server, tls: bool
    ) -> HttpServer | None:
        cfg = self.config
        if not cfg.http_listen:
            return None
        http = HttpServer(
            gateway,
            cfg.http_listen,
            tls=HttpTls(cfg.tls_cert, cfg.tls_key, cfg.client_ca) if tls else None,
            max_concurrency=cfg.max_concurrent_rpcs,
            reuse_port=cfg.workers > 1,
        )
        try:
            await http.start()
        except BaseException:
            await server.stop(None)
            raise
        self.http_port = http.port
        return http

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
        await self._reload_keys()
        self._key_metrics.observe_rewrap(await self.store.rewrap_progress())

    async def _reload_keys(self) -> None:
        """Reload the keyring; export key usage; rebase the encryption-limit watch."""
        assert self.keys is not None  # noqa: S101
        rows = await self.store.key_versions()
        if self.config.kek_provider != "shares":
            await self._follow_master_key(rows)
        await self.keys.load()
        rows = await self.store.key_versions()
        self._key_metrics.observe_versions(rows, self.rotation_limits, self.clock.now())
        primary = next((r for r in rows if r.state == "primary"), None)
        if primary is not None:
            self.usage.observe(primary.version, primary.encryptions)

    async def auto_rotate(self) -> AutoRotation | None:
        """Rotate if the primary reached key_max_age or key_max_encryptions (the job below
        runs this every key refresh, and at once when tokenizes cross the limit)."""
        assert self.key_ops is not None  # noqa: S101
        assert self.keys is not None  # noqa: S101
        woken = self.usage.due.is_set()
        self.usage.due.clear()
        loaded = self.keys.keyring.primary.version
        done = await self.key_ops.auto_rotate(self.rotation_limits, loaded)
        if done is None and woken:
            await self._reload_keys()  # rebase the watch on the store's count
        return done

    async def _auto_rotate_checked(self) -> None:
        await self.auto_rotate()

    async def _auto_rotate_loop(self) -> None:
        """The periodic check runs on the replica holding the job's lease. A server whose
        own tokenizes crossed key_max_encryptions rotates at once whoever holds it: that
        bounds how far past the limit it encrypts, and the version CAS keeps racing
        servers safe (one adds the version, the others load it)."""
        rotation_job = self.jobs.key_auto_rotate
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.usage.due.wait(), self.config.key_refresh_interval)
            try:
                if self.usage.due.is_set():
                    await self.auto_rotate()
                else:
                    await rotation_job()
            except Exception as exc:  # noqa: BLE001 - a background job must keep running
                log.warning("key auto-rotation failed: %s", type(exc).__name__)

    async def _follow_master_key(self, rows: list[KeyVersionRow]) -> None:
        """After (or during) a rotate-master: load the master keys the rows now name,
        and wrap new keys under the one the primary data key is under, so a server
        running through the rotation never writes a key under the retired master key."""
        assert self.keys is not None  # noqa: S101
        kek = self.keys.kek
        named = {r.kek_id for r in rows if r.wrapped_key is not None}
        current = next((r.kek_id for r in rows if r.state == "primary"), kek.kek_id)
        covered = all(kek.has(i) for i in named) if isinstance(kek, KekRing) else False
        if kek.kek_id == current and (covered or named <= {kek.kek_id}):
            return
        ring = await open_kek(self.config, self.store)
        self.keys.use_kek(ring.promote(current) if ring.has(current) else ring)
        if self.key_ops is not None:
            self.key_ops.use_kek(self.keys.kek)
        log.info("master key now %s", self.keys.kek.kek_id)

    async def stop(self, grace: float | None = None) -> None:
        """Refuse new calls, let in-flight ones finish, flush commits, close the store."""
        running, self._running = self._running, None
        if running is not None:
            await running.health.enter_graceful_shutdown()
            if running.http is not None:
                await running.http.stop()
            await running.server.stop(self.config.shutdown_grace if grace is None else grace)
            await running.authenticator.refusals.close()  # counted refusals into the trail
            if self.vault is not None:
                await self.vault.close()  # counted tokenize volume into the trail
            for task in running.tasks:
                task.cancel()
            await asyncio.gather(*running.tasks, return_exceptions=True)
            for job in self.jobs.all():
                try:
                    await job.release()
                except Exception as exc:  # noqa: BLE001 - it expires by itself then
                    log.warning("job lease release failed: %s", type(exc).__name__)
            if running.metrics_server is not None:
                running.metrics_server.shutdown()
                running.metrics_server.server_close()
        if self.key_ops is not None:
            await self.key_ops.close()  # a background rewrap stops, its lease released
        if self.forward is not None:
            await self.forward.close()  # the processor connections
        await self.store.close()
        await self.subject_key_store.close()
        if self.audit is not None:
            self.audit.close()
        self._stopped.set()
        log.info("vault stopped")

    async def wait_stopped(self) -> None:
        await self._stopped.wait()


def _grpc_server(cfg: Config) -> grpc.aio.Server:
    return grpc.aio.server(
        interceptors=tracing.server_interceptors(),
        maximum_concurrent_rpcs=cfg.max_concurrent_rpcs or None,
        options=[
            ("grpc.max_receive_message_length", cfg.max_message_bytes),
            ("grpc.max_send_message_length", 4 * cfg.max_message_bytes),
            # Headers up to 64 KiB reach the handler, so an oversized credential is
            # refused as UNAUTHENTICATED and audited; beyond that the transport
            # refuses the call before any handler runs (RESOURCE_EXHAUSTED).
            ("grpc.max_metadata_size", 64 * 1024),
            # One process per port unless --workers asks for sharing.
            ("grpc.so_reuseport", 1 if cfg.workers > 1 else 0),
            *connection_options(cfg),
        ],
    )


def _add_reflection(server: grpc.aio.Server) -> None:
    # REFLECTION_V1 is served (below) but not listed: the v1alpha descriptors are the
    # only ones grpcio-reflection ships, and a listed service must be describable.
    names = [
        TOKEN_SERVICE,
        KEY_SERVICE,
        SUBJECT_SERVICE.full_name,
        SEAL_SERVICE,
        FORWARD_SERVICE,
        HEALTH_SERVICE,
        reflection.SERVICE_NAME,
    ]
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


def _listen(server: grpc.aio.Server, listen: str, tls: TlsMaterial | None) -> int:
    try:
        if tls is None:
            return server.add_insecure_port(listen)
        return server.add_secure_port(listen, _server_credentials(tls))
    except RuntimeError:
        raise FailedPreconditionError(
            "cannot listen on the configured address", reason="LISTEN_FAILED"
        ) from None


async def _start_metrics(
    metrics_listen: str, server: grpc.aio.Server, http: HttpServer | None
) -> Any:
    """The Prometheus endpoint on ``metrics_listen`` (None when unset); on failure the
    servers already started are stopped."""
    if not metrics_listen:
        return None
    host, _, port = metrics_listen.rpartition(":")
    try:
        metrics_server, _thread = start_http_server(int(port), addr=host or "127.0.0.1")
    except (OSError, ValueError):
        await server.stop(None)
        if http is not None:
            await http.stop()
        raise FailedPreconditionError(
            "cannot listen on the metrics address", reason="LISTEN_FAILED"
        ) from None
    return metrics_server


async def _announce(
    health: HealthServicer, port: int, tls: TlsMaterial | None, *, sealed: bool
) -> None:
    # "" is liveness; the key-holding services are SERVING only now that migrations
    # ran and the keys are loaded, or once the last custodian share is in (sealed).
    await health.set("", health_pb2.HealthCheckResponse.SERVING)
    for name in KEYED_SERVICES:
        await health.set(
            name,
            health_pb2.HealthCheckResponse.NOT_SERVING
            if sealed
            else health_pb2.HealthCheckResponse.SERVING,
        )
    log.info(
        "vault %s on port %d (%s)",
        "sealed, waiting for custodian shares," if sealed else "serving",
        port,
        "plaintext" if tls is None else "mTLS" if tls.client_ca else "TLS",
    )
