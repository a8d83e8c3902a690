"""What the vaultctl commands share: the one-line error, config loading, the data-dir
check, and the event loop they run on."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Coroutine
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from vault.auth.transport import is_local_address
from vault.cli.kek import shares_reader
from vault.config import Config, load_config
from vault.wiring import OpenedVault, check_data_dir, opened

__all__ = [
    "EXIT_FAILURE",
    "EXIT_USAGE",
    "CommandError",
    "add_client_tls_args",
    "add_store_args",
    "check_plaintext_target",
    "client_channel",
    "config_for",
    "existing_vault",
    "iso_time",
    "run_async",
    "vault_of",
]

EXIT_FAILURE = 1
EXIT_USAGE = 2


class CommandError(Exception):
    """A one-line reason for the user; the command exits non-zero."""


def iso_time(seconds: float | None) -> str | None:
    """Unix seconds as ISO 8601 UTC, for people and JSON; None stays None."""
    return datetime.fromtimestamp(seconds, UTC).isoformat() if seconds is not None else None


def run_async(coro: Coroutine[Any, Any, int]) -> int:
    try:
        import uvloop  # noqa: PLC0415 - optional speed-up, absent on some platforms
    except ImportError:  # pragma: no cover
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return int(runner.run(coro))


def config_for(args: argparse.Namespace, **extra: Any) -> Config:
    overrides = {
        "data_dir": getattr(args, "data_dir", None),
        "database_url": getattr(args, "database_url", None),
        "subject_key_database_url": getattr(args, "subject_key_database_url", None),
        **extra,
    }
    return load_config(getattr(args, "config", None), overrides)


def existing_vault(args: argparse.Namespace) -> Config:
    """Config of a data dir that holds a vault; a mistyped path is an error, not a new vault."""
    cfg = config_for(args)
    check_data_dir(cfg)
    if cfg.database_url.startswith(("postgresql://", "postgres://")):
        # The store is elsewhere; what must be here is the master key (unless it lives
        # in an HSM or with the custodians).
        if cfg.kek_provider == "file" and not cfg.master_key_path.exists():
            raise CommandError(
                "no master key in the data dir (copy the vault's master.key there, "
                "or create a vault with `vaultctl keys init --database-url ...`)"
            )
        return cfg
    path = Path(cfg.database_url.removeprefix("sqlite://")) if cfg.database_url else None
    if not (path or cfg.database_path).exists():
        raise CommandError(
            "no vault in the data dir (create one with `vaultctl keys init` or `serve --dev`)"
        )
    return cfg


def vault_of(
    args: argparse.Namespace, *, need_keys: bool = False, cfg: Config | None = None
) -> AbstractAsyncContextManager[OpenedVault]:
    """The command's vault, opened by the wiring (``cfg``: else the existing data dir's);
    with ``need_keys`` the master key (``--shares-from -`` where configured) first."""
    return opened(
        cfg if cfg is not None else existing_vault(args),
        need_keys=need_keys,
        read_shares=shares_reader(args),
    )


def add_store_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", type=Path, help="the vault's data directory (default ./var)")
    p.add_argument("--config", type=Path, help="TOML config file")
    p.add_argument(
        "--database-url",
        help="the store: postgresql://USER@HOST[:PORT]/DB or sqlite:///PATH (default: "
        "vault.db in the data dir); prefer VAULT_DATABASE_URL or PGPASSWORD for a password",
    )
    p.add_argument(
        "--subject-key-database-url",
        help="per-subject keys: postgresql://… of a separate database (required with a "
        "PostgreSQL --database-url) or sqlite:///PATH (default: subject-keys.db in the "
        "data dir); prefer VAULT_SUBJECT_KEY_DATABASE_URL for a password",
    )


def add_client_tls_args(p: argparse.ArgumentParser) -> None:
    """The flags of every command that dials a running vault."""
    p.add_argument("--tls-ca", help="PEM CA of the server's certificate: connect with TLS")
    p.add_argument("--tls-cert", help="PEM client certificate, for a server with mTLS")
    p.add_argument("--tls-key", help="PEM key of --tls-cert")
    p.add_argument("--tls-server-name", help="name to check the server certificate for")
    p.add_argument(
        "--insecure",
        action="store_true",
        help="allow plaintext to a non-loopback address (credentials and shares in clear)",
    )


def check_plaintext_target(args: argparse.Namespace, address: str) -> None:
    """Plaintext (no --tls-ca) only to a loopback address, or with --insecure: checked
    before a command reads any secret it would send."""
    if args.tls_ca or is_local_address(address) or getattr(args, "insecure", False):
        return
    raise CommandError(
        f"refusing plaintext to {address}, not a loopback address: pass --tls-ca "
        "(TLS), or --insecure to send in clear"
    )


def client_channel(grpc: Any, args: argparse.Namespace, address: str) -> Any:
    """A channel to a running vault: TLS with --tls-ca (and mTLS with --tls-cert and
    --tls-key), or plaintext to a loopback address (elsewhere only with --insecure);
    ``grpc`` is the module, imported only by commands that call."""
    if not args.tls_ca:
        if args.tls_cert or args.tls_key:
            raise CommandError("--tls-cert and --tls-key need --tls-ca")
        check_plaintext_target(args, address)
        return grpc.insecure_channel(address)
    if bool(args.tls_cert) != bool(args.tls_key):
        raise CommandError("--tls-cert and --tls-key go together")
    try:
        ca = Path(args.tls_ca).read_bytes()
        cert = Path(args.tls_cert).read_bytes() if args.tls_cert else None
        key = Path(args.tls_key).read_bytes() if args.tls_key else None
    except OSError:
        raise CommandError("a TLS file cannot be read") from None
    options = []
    if getattr(args, "tls_server_name", None):
        options.append(("grpc.ssl_target_name_override", args.tls_server_name))
    credentials = grpc.ssl_channel_credentials(ca, key, cert)
    return grpc.secure_channel(address, credentials, options=options)
