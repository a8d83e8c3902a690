"""vaultctl: the one command. Every failure is one line on stderr and a non-zero exit."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime
from typing import Any

from vault import __version__
from vault.auth.mtls import parse_cert_identity, untyped
from vault.auth.policy import SCOPE_FORWARD, parse_scopes
from vault.cli import (
    audit_cmd,
    keys_cmd,
    retention_cmd,
    routes_cmd,
    store_cmd,
    subjects_cmd,
)
from vault.cli.common import (
    EXIT_FAILURE,
    CommandError,
    add_client_tls_args,
    client_channel,
    iso_time,
    vault_of,
)
from vault.cli.common import add_store_args as _add_store_args
from vault.cli.common import config_for as _config
from vault.cli.common import run_async as _run
from vault.cli.kek import add_shares_arg
from vault.config import Config
from vault.domain.callers import CallerAdministration, NewCaller
from vault.domain.model import DataKind
from vault.errors import VaultError
from vault.logs import setup_logging
from vault.wiring import OpenedVault, harden_process

__all__ = ["main"]

# -- serve ------------------------------------------------------------------------------


def _announce(cfg: Config, port: int, dev_key: str | None, metrics_ports: list[int]) -> None:
    if dev_key is not None:
        # Printed once; the same key is in DATA_DIR/dev-api-key (0600).
        print(f"dev API key (shown once, also in {cfg.dev_key_path}): {dev_key}")
    print(f"vault listening on {cfg.listen.rpartition(':')[0]}:{port}", flush=True)
    host = cfg.metrics_listen.rpartition(":")[0]
    for index, metrics_port in enumerate(metrics_ports):
        if metrics_port:
            who = f"worker {index} " if len(metrics_ports) > 1 else ""
            print(f"{who}metrics on http://{host}:{metrics_port}/metrics", flush=True)


def _serve(args: argparse.Namespace) -> int:
    if args.workers is not None and args.workers < 1:
        raise CommandError("--workers must be at least 1")
    cfg = _config(
        args,
        listen=args.listen,
        metrics_listen=args.metrics_listen,
        http_listen=args.http_listen,
        dev=True if args.dev else None,
        log_format=args.log_format,
        workers=args.workers,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        client_ca=args.client_ca,
        insecure_plaintext=True if args.insecure_plaintext else None,
    )
    setup_logging(cfg.log_format, cfg.log_level)
    if cfg.workers > 1:
        from vault.workers import run_workers  # noqa: PLC0415 - grpc only for serve

        return run_workers(cfg, lambda port, key, ports: _announce(cfg, port, key, ports))
    return _run(_serve_one(cfg))


async def _serve_one(cfg: Config) -> int:
    from vault.server import VaultServer  # noqa: PLC0415 - grpc only for serve

    server = VaultServer(cfg)
    await server.start()
    _announce(cfg, server.port, server.dev_key, [server.metrics_port])
    if server.http_port:
        scheme = "https" if cfg.tls_cert else "http"
        host = cfg.http_listen.rpartition(":")[0]
        print(f"HTTP/JSON on {scheme}://{host}:{server.http_port}", flush=True)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop()
    return 0


# -- callers ----------------------------------------------------------------------------


def _parse_expiry(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise CommandError("--expires must be an ISO 8601 date or time") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def _parse_reveal_kinds(text: str | None) -> tuple[str, ...]:
    """`PAN,EMAIL` or `DATA_KIND_PAN,...` → DataKind names; None = every kind."""
    if not text:
        return ()
    known = {k.name for k in DataKind if k is not DataKind.UNSPECIFIED}
    names = tuple(
        dict.fromkeys(n.strip().upper().removeprefix("DATA_KIND_") for n in text.split(","))
    )
    if not names or not set(names) <= known:
        raise CommandError(
            "--reveal-kinds must be a comma-separated subset of " + ",".join(sorted(known))
        )
    return names


def _administration(vault: OpenedVault) -> CallerAdministration:
    return CallerAdministration(
        vault.store,
        vault.clock,
        vault.audit_trail,
        audit_cmd.operator_name(),
        operator_tenant=vault.config.operator_tenant,
    )


def _cert_identity(args: argparse.Namespace) -> str | None:
    """The typed identity --cert-uri, --cert-cn or --cert-identity uri:…|cn:… names."""
    if args.cert_uri is not None:
        text = f"uri:{args.cert_uri}"
    elif args.cert_cn is not None:
        text = f"cn:{args.cert_cn}"
    elif args.cert_identity is not None:
        text = args.cert_identity
    else:
        return None
    try:
        return parse_cert_identity(text)
    except ValueError as exc:
        raise CommandError(str(exc)) from None


async def _callers_add(args: argparse.Namespace) -> int:
    try:
        scopes = parse_scopes(args.scopes)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    cert_identity = _cert_identity(args)
    expires = _parse_expiry(args.expires)
    reveal_kinds = _parse_reveal_kinds(args.reveal_kinds)
    if args.reveal_rate < 0 or args.reveal_burst < 0:
        raise CommandError("--reveal-rate and --reveal-burst must not be negative")
    routes = tuple(dict.fromkeys(r.strip() for r in (args.routes or "").split(",") if r.strip()))
    if routes and SCOPE_FORWARD not in scopes:
        raise CommandError("--routes needs the forward scope")
    burst = args.tokenize_burst
    if (args.tokenize_rate or 0) < 0 or (burst is not None and burst < 1):
        raise CommandError("--tokenize-rate must not be negative, --tokenize-burst at least 1")
    new = NewCaller(
        name=args.name,
        tenant=args.tenant,
        scopes=scopes,
        cert_identity=cert_identity,
        expires_at=expires,
        reveal_kinds=reveal_kinds,
        reveal_rate=args.reveal_rate,
        reveal_burst=args.reveal_burst,
        routes=routes,
        tokenize_rate=args.tokenize_rate,
        tokenize_burst=args.tokenize_burst,
    )
    async with vault_of(args) as vault:
        key = await _administration(vault).add(new)
    if key is None:
        assert cert_identity is not None  # noqa: S101 - no key is minted for a certificate
        kind, name = cert_identity.split(":", 1)
        bound = {
            "name": args.name,
            "tenant": args.tenant,
            "cert_identity": name,
            "cert_identity_type": kind,
        }
        print(
            json.dumps(bound)
            if args.json
            else f"{args.name} is the caller with certificate {kind} {name}"
        )
    elif args.json:
        print(json.dumps({"name": args.name, "tenant": args.tenant, "api_key": key.text}))
    else:
        print(f"API key for {args.name} (shown once, store it now): {key.text}")
    return 0


async def _callers_list(args: argparse.Namespace) -> int:
    async with vault_of(args) as vault:
        rows = await _administration(vault).list()
    data = [
        {
            "name": r.name,
            "tenant": r.tenant,
            "scopes": list(r.scopes),
            "created": iso_time(r.created_at),
            "expires": iso_time(r.expires_at),
            "revoked": iso_time(r.revoked_at),
            "cert_identity": untyped(r.cert_identity) if r.cert_identity else None,
            "cert_identity_type": r.cert_identity.partition(":")[0] if r.cert_identity else None,
            "reveal_kinds": list(r.reveal_kinds),
            "reveal_rate": r.reveal_rate,
            "reveal_burst": r.reveal_burst,
            "tokenize_rate": r.tokenize_rate,
            "tokenize_burst": r.tokenize_burst,
        }
        for r in rows
    ]
    if args.json:
        print(json.dumps({"callers": data}, indent=2))
    else:
        for r in rows:
            state = "revoked" if r.revoked_at is not None else "active"
            who = (
                f"\tcert:{untyped(r.cert_identity)} ({r.cert_identity.partition(':')[0]})"
                if r.cert_identity
                else ""
            )
            print(f"{r.name}\t{r.tenant}\t{','.join(r.scopes)}\t{state}{who}")
    return 0


async def _callers_revoke(args: argparse.Namespace) -> int:
    async with vault_of(args) as vault:
        await _administration(vault).revoke(args.name)
    print(f"revoked {args.name}")
    return 0


# -- health -----------------------------------------------------------------------------


def _health(args: argparse.Namespace) -> int:
    """gRPC health check of a running vault: exit 0 when SERVING (for container probes)."""
    import grpc  # noqa: PLC0415 - only this command talks to a server
    from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: PLC0415

    with client_channel(grpc, args, args.address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout
            )
        except grpc.RpcError as exc:
            raise CommandError(f"health check failed: {exc.code().name}") from None
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(status)
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else EXIT_FAILURE


# -- parser -----------------------------------------------------------------------------


def _register_serve(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`vaultctl serve`: the server, its listeners and TLS."""
    serve = sub.add_parser("serve", help="run the gRPC server")
    _add_store_args(serve)
    serve.add_argument("--listen", help="HOST:PORT for gRPC (default 127.0.0.1:50051)")
    serve.add_argument("--metrics-listen", help="HOST:PORT for Prometheus metrics")
    serve.add_argument(
        "--http-listen",
        help="HOST:PORT serving the unary methods as HTTP/JSON too (default off)",
    )
    serve.add_argument(
        "--dev",
        action="store_true",
        help="on an empty data dir, create a master key and a dev API key with every scope",
    )
    serve.add_argument("--log-format", choices=["plain", "json"])
    serve.add_argument("--tls-cert", help="PEM certificate chain: serve TLS only")
    serve.add_argument("--tls-key", help="PEM private key of --tls-cert (mode 0600)")
    serve.add_argument(
        "--client-ca",
        help="PEM CA: require a client certificate that chains to it (mTLS)",
    )
    serve.add_argument(
        "--insecure-plaintext",
        action="store_true",
        help="allow plaintext on a non-loopback --listen (a TLS proxy on the same host); "
        "calls with a credential from other hosts are still refused",
    )
    serve.add_argument(
        "--workers",
        type=int,
        help="server processes sharing the port (SO_REUSEPORT); default 1",
    )
    serve.set_defaults(handler=_serve)


def _register_health(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`vaultctl health`: a running vault's gRPC health, over TLS when asked."""
    health = sub.add_parser("health", help="check a running vault's gRPC health")
    health.add_argument("--address", default="127.0.0.1:50051", help="HOST:PORT of the vault")
    health.add_argument("--service", default="", help="service name ('' = the whole server)")
    health.add_argument("--timeout", type=float, default=3.0, help="seconds")
    add_client_tls_args(health)
    health.set_defaults(handler=_health)


def _register_callers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`vaultctl callers add|list|revoke`."""
    callers = sub.add_parser("callers", help="API-key callers")
    c_sub = callers.add_subparsers(dest="callers_command", required=True)
    c_add = c_sub.add_parser("add", help="add a caller and print its API key once")
    _add_store_args(c_add)
    add_shares_arg(c_add)
    c_add.add_argument("name")
    c_add.add_argument("--tenant", required=True)
    c_add.add_argument("--scopes", required=True, help="comma-separated scopes")
    c_add.add_argument("--expires", help="ISO 8601 expiry of the key")
    c_add.add_argument(
        "--reveal-kinds", help="data kinds it may reveal, e.g. PAN,EMAIL (default: every kind)"
    )
    c_add.add_argument(
        "--reveal-rate", type=float, default=0.0, help="reveals per second (default: no limit)"
    )
    c_add.add_argument(
        "--reveal-burst", type=int, default=0, help="reveals at once (default: the rate, >= 1)"
    )
    c_add.add_argument(
        "--tokenize-rate",
        type=float,
        help="values tokenized per second, batch items counted (default: the server's "
        "tokenize_rate; 0 = no budget)",
    )
    c_add.add_argument(
        "--tokenize-burst",
        type=int,
        help="values tokenized at once (default: the server's tokenize_burst)",
    )
    bind = c_add.add_mutually_exclusive_group()
    bind.add_argument(
        "--cert-uri",
        help="bind the mTLS client certificates whose first SAN URI is this (e.g. "
        "spiffe://…) instead of minting an API key",
    )
    bind.add_argument(
        "--cert-cn",
        help="bind the mTLS client certificates with no SAN URI and this subject CN",
    )
    bind.add_argument("--cert-identity", help="the same, typed: uri:<SAN URI> or cn:<subject CN>")
    c_add.add_argument(
        "--routes", help="Forward routes it may use, e.g. stripe,adyen (needs the forward scope)"
    )
    c_add.add_argument("--json", action="store_true")
    c_add.set_defaults(handler=_callers_add)
    c_list = c_sub.add_parser("list", help="callers (no secrets)")
    _add_store_args(c_list)
    c_list.add_argument("--json", action="store_true")
    c_list.set_defaults(handler=_callers_list)
    c_revoke = c_sub.add_parser("revoke", help="revoke a caller's key")
    _add_store_args(c_revoke)
    add_shares_arg(c_revoke)
    c_revoke.add_argument("name")
    c_revoke.set_defaults(handler=_callers_revoke)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vaultctl", description="Payment-data tokenization vault."
    )
    parser.add_argument("--version", action="version", version=f"vaultctl {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    _register_serve(sub)
    keys_cmd.register(sub)
    _register_health(sub)
    _register_callers(sub)
    audit_cmd.register(sub)
    store_cmd.register(sub)
    subjects_cmd.register(sub)
    retention_cmd.register(sub)
    routes_cmd.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # Every command: many hold a master key, a share, an API key or exported values in
    # memory (no core dumps), and every file they create is the owner's only (umask).
    harden_process()
    try:
        if args.command in {"serve", "health"}:
            return int(args.handler(args))  # no event loop, or their own
        handler: Callable[[argparse.Namespace], Coroutine[Any, Any, int]] = args.handler
        return _run(handler(args))
    except (VaultError, CommandError) as exc:
        print(f"vaultctl: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
