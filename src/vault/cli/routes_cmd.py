"""``vaultctl routes add|list|remove``: the Forward routes, configured by ops only.

Routes live in the store; every running server picks a change up within
``route_refresh_interval`` (2 s), without a restart. Each change is recorded in the audit
trail (so the master key is needed); a route's client key is sealed under it before it
is stored, and is never printed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from vault.cli import audit_cmd
from vault.cli.common import CommandError, add_store_args, iso_time, vault_of
from vault.cli.kek import add_shares_arg
from vault.errors import InvalidArgumentError
from vault.forward.routes import RouteAdministration, RouteSecrets, RouteSpec, check_spec
from vault.secrets import SecretBytes
from vault.wiring import OpenedVault

__all__ = ["administration", "register"]


def administration(vault: OpenedVault) -> RouteAdministration:
    async def open_secrets() -> RouteSecrets:
        secrets = await RouteSecrets.open(
            vault.store, await vault.master_key(), vault.clock, create=True
        )
        assert secrets is not None  # noqa: S101 - create=True makes it
        return secrets

    return RouteAdministration(
        vault.store, vault.clock, vault.audit_trail, open_secrets, audit_cmd.operator_name()
    )


def _read(path: Path | None, flag: str) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError:
        raise CommandError(f"{flag}: cannot read the file") from None


async def _add(args: argparse.Namespace) -> int:
    key = _read(args.client_key, "--client-key")
    spec = RouteSpec(
        name=args.name,
        url=args.url,
        method=args.method.upper(),
        ca_pem=_read(args.ca, "--ca"),
        client_cert_pem=_read(args.client_cert, "--client-cert"),
        client_key_pem=None if key is None else SecretBytes(key),
        allow_headers=tuple(h.strip().lower() for h in args.allow_header),
        timeout=args.timeout,
        max_response_bytes=args.max_response_bytes,
        tokenize_paths=tuple(args.tokenize_path),
    )
    try:
        check_spec(spec)  # before the master key is asked for
    except InvalidArgumentError as exc:
        flags = "; ".join(f"--{v.field.replace('_', '-')} {v.description}" for v in exc.violations)
        raise CommandError(f"refused: {flags}") from None
    # The master key before the change: it must be recorded (and seals the client key).
    async with vault_of(args, need_keys=True) as vault:
        await administration(vault).add(spec)
    print(f"route {spec.name} sends {spec.method} {spec.url}")
    return 0


async def _list(args: argparse.Namespace) -> int:
    async with vault_of(args) as vault:
        rows = await administration(vault).list()
        permissions = await vault.store.route_permissions()
    allowed: dict[str, list[str]] = {}
    for caller, route in permissions:
        allowed.setdefault(route, []).append(caller)
    data: list[dict[str, Any]] = [
        {
            "name": r.name,
            "url": r.url,
            "method": r.method,
            "ca": "route" if r.ca_pem else "system",
            "mtls": r.client_cert_pem is not None,
            "allow_headers": list(r.allow_headers),
            "timeout": r.timeout,
            "max_response_bytes": r.max_response_bytes,
            "tokenize_paths": list(r.tokenize_paths),
            "callers": allowed.get(r.name, []),
            "revision": r.revision,
            "configured": iso_time(r.created_at),
        }
        for r in rows
    ]
    if args.json:
        print(json.dumps({"routes": data}, indent=2))
        return 0
    for r in rows:
        mtls = " mTLS" if r.client_cert_pem else ""
        callers = ",".join(allowed.get(r.name, [])) or "-"
        print(
            f"{r.name}\t{r.method} {r.url}\tca={'route' if r.ca_pem else 'system'}{mtls}"
            f"\tcallers={callers}"
        )
    return 0


async def _remove(args: argparse.Namespace) -> int:
    async with vault_of(args, need_keys=True) as vault:
        await administration(vault).remove(args.name)
    print(f"route {args.name} removed")
    return 0


async def _allow(args: argparse.Namespace) -> int:
    async with vault_of(args, need_keys=True) as vault:
        known = [c.name for c in await vault.store.callers() if c.revoked_at is None]
        await administration(vault).allow(args.name, args.caller, known)
    print(f"route {args.name} allowed for {', '.join(args.caller)}")
    return 0


def register(sub: Any) -> None:
    """Add ``routes ...`` to vaultctl's parser."""
    routes = sub.add_parser("routes", help="Forward routes to payment processors")
    r_sub = routes.add_subparsers(dest="routes_command", required=True)
    add = r_sub.add_parser("add", help="add (or replace) a route")
    add_store_args(add)
    add_shares_arg(add)
    add.add_argument("name", help="the route name callers use")
    add.add_argument("--url", required=True, help="https URL of the processor's endpoint")
    add.add_argument("--method", default="POST", help="HTTP method (default POST)")
    add.add_argument(
        "--ca", type=Path, help="PEM CA file to verify the processor by (default: system roots)"
    )
    add.add_argument("--client-cert", type=Path, help="PEM client certificate, for mTLS")
    add.add_argument(
        "--client-key", type=Path, help="PEM key of --client-cert (sealed, never shown)"
    )
    add.add_argument(
        "--allow-header",
        action="append",
        default=[],
        help="a header callers may send and receive (repeat for more)",
    )
    add.add_argument("--timeout", type=float, default=10.0, help="seconds in all (default 10)")
    add.add_argument(
        "--max-response-bytes", type=int, default=1024 * 1024, help="largest answer (1 MiB)"
    )
    add.add_argument(
        "--tokenize-path",
        action="append",
        default=[],
        help="JSON path of the answer whose card numbers are tokenized, e.g. card.number",
    )
    add.set_defaults(handler=_add)
    lst = r_sub.add_parser("list", help="routes and who may use them (no secrets)")
    add_store_args(lst)
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(handler=_list)
    remove = r_sub.add_parser("remove", help="remove a route and every permission to use it")
    add_store_args(remove)
    add_shares_arg(remove)
    remove.add_argument("name")
    remove.set_defaults(handler=_remove)
    allow = r_sub.add_parser("allow", help="let existing callers forward on a route")
    add_store_args(allow)
    add_shares_arg(allow)
    allow.add_argument("name")
    allow.add_argument(
        "--caller", action="append", required=True, help="a caller name (repeat for more)"
    )
    allow.set_defaults(handler=_allow)
