"""``vaultctl serve --workers N``: N server processes on one port (SO_REUSEPORT).

The parent prepares the data dir once (migrations, keys, dev caller), reserves the
port, starts the workers, prints one "listening" line when every worker is SERVING,
forwards SIGTERM/SIGINT, and restarts a worker that dies while the others serve. Each
worker is a whole vault (its own store connections, group commit and keyring); the
store's transactions keep them consistent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import multiprocessing.queues
import os
import signal
import socket
import time
from dataclasses import replace
from typing import Any

from vault.config import Config
from vault.errors import FailedPreconditionError, VaultError
from vault.logs import setup_logging
from vault.server import VaultServer
from vault.wiring import (
    check_data_dir,
    check_dev_store,
    check_listen,
    create_dev_caller,
    harden_process,
    init_data_dir,
    opened,
)

__all__ = ["prepare_data_dir", "run_workers"]

log = logging.getLogger(__name__)

_START_TIMEOUT = 60.0
_RESTART_BACKOFF = 1.0


async def prepare_data_dir(cfg: Config) -> str | None:
    """Migrations, keys and (with --dev) the dev caller, once, before any worker starts."""
    check_data_dir(cfg)
    check_listen(cfg, tls=bool(cfg.tls_cert))
    async with opened(cfg) as vault:
        if not cfg.dev:
            return None
        await check_dev_store(cfg, vault.store)
        await init_data_dir(cfg, vault.store, vault.clock)
        return await create_dev_caller(cfg, vault.store, vault.clock, await vault.audit_trail())


def _reserve_port(listen: str) -> tuple[socket.socket, str]:
    """Hold the port (bound, not listening) so port 0 resolves once for every worker."""
    host, _, port = listen.rpartition(":")
    bare = host.strip("[]")
    family = socket.AF_INET6 if ":" in bare else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((bare or "0.0.0.0", int(port)))  # noqa: S104 - the configured address
    except (OSError, ValueError):
        sock.close()
        raise FailedPreconditionError(
            "cannot listen on the configured address", reason="LISTEN_FAILED"
        ) from None
    return sock, f"{host}:{sock.getsockname()[1]}"


async def _watch_parent(parent: int, stop: asyncio.Event) -> None:
    """A worker whose supervisor died (even by SIGKILL) drains and exits."""
    while os.getppid() == parent:  # noqa: ASYNC110 - no event tells a parent died
        await asyncio.sleep(0.5)
    log.warning("supervisor gone; worker stopping")
    stop.set()


def _worker_main(
    cfg: Config, index: int, events: multiprocessing.queues.Queue[Any], parent: int
) -> None:
    setup_logging(cfg.log_format, cfg.log_level)
    harden_process()

    async def run() -> None:
        server = VaultServer(cfg)
        try:
            await server.start()
        except VaultError as exc:
            events.put(("error", index, str(exc)))
            return
        events.put(("ready", index, server.metrics_port))
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        watchdog = asyncio.create_task(_watch_parent(parent, stop))
        await stop.wait()
        watchdog.cancel()
        await server.stop()

    try:
        import uvloop  # noqa: PLC0415 - optional speed-up

        uvloop.run(run())
    except ImportError:  # pragma: no cover
        asyncio.run(run())


def _worker_config(cfg: Config, listen: str, index: int) -> Config:
    metrics = cfg.metrics_listen
    if metrics:
        host, _, port = metrics.rpartition(":")
        # Worker i serves metrics on base port + i (port 0: each picks one).
        metrics = f"{host}:{int(port) + index if int(port) else 0}"
    return replace(cfg, listen=listen, metrics_listen=metrics, dev=False)


def run_workers(cfg: Config, announce: Any) -> int:
    """Run the workers until SIGTERM/SIGINT; once all serve, ``announce(port, dev_key,
    metrics_ports)`` (a metrics port is 0 where metrics are off)."""
    dev_key = asyncio.run(prepare_data_dir(cfg))
    holder, listen = _reserve_port(cfg.listen)
    ctx = multiprocessing.get_context("spawn")
    events: multiprocessing.queues.Queue[Any] = ctx.Queue()
    procs: dict[int, multiprocessing.process.BaseProcess] = {}
    stopping = False

    def start(index: int) -> None:
        proc = ctx.Process(
            target=_worker_main,
            args=(_worker_config(cfg, listen, index), index, events, os.getpid()),
            name=f"vault-worker-{index}",
        )
        proc.start()
        procs[index] = proc

    def on_signal(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        for i in range(cfg.workers):
            start(i)
        ready: dict[int, int] = {}
        deadline = time.monotonic() + _START_TIMEOUT
        while len(ready) < cfg.workers:
            if stopping or time.monotonic() > deadline:
                raise FailedPreconditionError("workers did not start", reason="WORKERS_FAILED")
            try:
                kind, index, detail = events.get(timeout=0.2)
            except Exception:  # noqa: BLE001, S112 - queue.Empty: poll again
                continue
            if kind == "error":
                raise FailedPreconditionError(str(detail), reason="WORKERS_FAILED")
            ready[index] = int(detail)
        announce(int(listen.rpartition(":")[2]), dev_key, [ready[i] for i in sorted(ready)])
        while not stopping:
            time.sleep(0.2)
            for index, proc in list(procs.items()):
                if not proc.is_alive() and not stopping:
                    log.warning("worker %d exited with %s; restarting", index, proc.exitcode)
                    time.sleep(_RESTART_BACKOFF)
                    start(index)
        return 0
    finally:
        for proc in procs.values():
            if proc.is_alive() and proc.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)
        for proc in procs.values():
            proc.join(cfg.shutdown_grace + 5)
            if proc.is_alive():
                proc.kill()
        holder.close()
