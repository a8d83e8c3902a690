"""``vaultctl keys init|status|rotate|rewrap|retire``: the data-key lifecycle.

Each change is recorded in the audit trail (versions and counts, never key material).
Running servers pick up a new primary at their next keyring refresh (every few seconds).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from vault.cli import audit_cmd, master_cmd
from vault.cli.common import (
    CommandError,
    add_store_args,
    config_for,
    existing_vault,
    iso_time,
    vault_of,
)
from vault.cli.kek import add_shares_arg
from vault.cli.progress import Progress
from vault.clock import SystemClock
from vault.config import Config
from vault.domain import rotation
from vault.domain.keyops import Actor, KeyOperations
from vault.storage.base import Store
from vault.wiring import init_data_dir

__all__ = ["register"]


@contextlib.asynccontextmanager
async def _key_operations(
    cfg: Config, args: argparse.Namespace
) -> AsyncIterator[tuple[KeyOperations, Actor]]:
    """The audited key operations on the vault's store, as this operator."""
    async with vault_of(args, cfg=cfg, need_keys=True) as vault:
        trail = await vault.audit_trail()
        ops = KeyOperations(vault.store, await vault.master_key(), vault.clock, trail)
        yield ops, Actor(audit_cmd.operator_name())


async def _init(args: argparse.Namespace) -> int:
    if args.shares is not None and args.kek not in {None, "shares"}:
        raise CommandError("--shares splits the master key: it goes with --kek shares or alone")
    if args.shares is not None or args.kek == "shares":
        return await master_cmd.init_shares(args)
    cfg = config_for(args, kek_provider=args.kek)
    async with vault_of(args, cfg=cfg) as vault:
        created = await init_data_dir(cfg, vault.store, vault.clock)
    print("master key and data key created" if created else "keys already initialised")
    return 0


def _rewrap_dict(status: rotation.RewrapStatus | None) -> dict[str, Any] | None:
    if status is None:
        return None
    p = status.progress
    return {
        "state": status.state,
        "primary": p.primary_version,
        "started": iso_time(p.started_at),
        "last_batch": iso_time(p.last_batch_at),
        "finished": iso_time(p.finished_at),
        "batches": p.batches,
        "rewrapped": p.rewrapped,
        "skipped": p.skipped,
        "failed": p.failed,
        "remaining": p.remaining,
        "batch_size": p.batch_size,
        "rate": p.rate,
        "holder": p.holder,
    }


async def _status(args: argparse.Namespace) -> int:
    async with vault_of(args) as vault:
        versions = await rotation.key_status(vault.store)
        rewrap = _rewrap_dict(await rotation.rewrap_status(vault.store, vault.clock))
    data = [
        {
            "version": v.version,
            "state": v.state,
            "created": iso_time(v.created_at),
            "encryptions": v.encryptions,
            "records": v.records,
            "kek": v.kek_id,
        }
        for v in versions
    ]
    if args.json:
        print(json.dumps({"versions": data, "rewrap": rewrap}, indent=2))
    else:
        for d in data:
            print(
                f"v{d['version']}\t{d['state']}\t{d['created']}\t"
                f"{d['encryptions']} encryptions\t{d['records']} records"
            )
        if rewrap is not None:
            print(
                f"rewrap to v{rewrap['primary']}: {rewrap['state']}, started {rewrap['started']}, "
                f"{rewrap['rewrapped']} done, {rewrap['remaining']} remaining, "
                f"last batch {rewrap['last_batch']}, holder {rewrap['holder']}"
            )
    return 0


async def _rotate(args: argparse.Namespace) -> int:
    cfg = existing_vault(args)
    async with _key_operations(cfg, args) as (ops, actor):
        old, new = await ops.rotate(actor)
    print(f"v{new} is the primary; v{old} is active (decrypt only)")
    return 0


async def _settle(cfg: Config, store: Store) -> None:
    """Give running servers one keyring refresh to start writing under a new primary,
    so records they add are not left behind on the old version."""
    rows = await store.key_versions()
    primary = next((r for r in rows if r.state == "primary"), None)
    if primary is None:
        return
    wait = primary.created_at + cfg.key_refresh_interval + 1.0 - SystemClock().now()
    if wait > 0:
        print(f"waiting {wait:.0f} s for servers to load v{primary.version}", flush=True)
        await asyncio.sleep(wait)


async def _rewrap(args: argparse.Namespace) -> int:
    if args.batch < 1:
        raise CommandError("--batch must be at least 1")
    if args.rate < 0:
        raise CommandError("--rate must not be negative")
    cfg = existing_vault(args)

    async with _key_operations(cfg, args) as (ops, actor):
        await _settle(cfg, ops.store)
        run = await ops.start_rewrap(actor, batch=args.batch, rate=args.rate)
        with Progress("rewrap") as bar:

            def show(p: rotation.RewrapProgress) -> None:
                done = p.rewrapped + p.skipped + p.failed
                detail = f"{p.remaining} on older versions" + (
                    f", {p.failed} failed" if p.failed else ""
                )
                bar.update(
                    done,
                    done + p.remaining,
                    detail,
                    label=f"rewrap to v{p.primary}",
                    step=f"batch {p.batches}",
                )

            result = await ops.finish_rewrap(actor, run, progress=show)
    if result.failed:
        raise CommandError(f"{result.failed} records did not decrypt and were left as they are")
    print(
        f"rewrap done: {result.rewrapped} records moved to v{result.primary}, "
        f"{result.remaining} left on older versions"
    )
    return 0


async def _retire(args: argparse.Namespace) -> int:
    cfg = existing_vault(args)
    async with _key_operations(cfg, args) as (ops, actor):
        await ops.retire(actor, args.version)
    print(f"v{args.version} retired; its key is destroyed")
    return 0


def register(subparsers: Any) -> None:
    """Add ``keys ...`` to vaultctl's parser."""
    keys = subparsers.add_parser("keys", help="master key and data-key versions")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    k_init = keys_sub.add_parser("init", help="create the master key file and data key v1")
    add_store_args(k_init)
    master_cmd.add_init_args(k_init)
    k_init.set_defaults(handler=_init)
    k_status = keys_sub.add_parser("status", help="data-key versions and their use")
    add_store_args(k_status)
    k_status.add_argument("--json", action="store_true")
    k_status.set_defaults(handler=_status)
    k_rotate = keys_sub.add_parser("rotate", help="a new primary data key; the old one decrypts")
    add_store_args(k_rotate)
    add_shares_arg(k_rotate)
    k_rotate.set_defaults(handler=_rotate)
    k_rewrap = keys_sub.add_parser(
        "rewrap", help="re-encrypt records of older versions under the primary, online"
    )
    add_store_args(k_rewrap)
    add_shares_arg(k_rewrap)
    k_rewrap.add_argument(
        "--batch",
        type=int,
        default=rotation.DEFAULT_BATCH,
        help=f"records per batch (default {rotation.DEFAULT_BATCH})",
    )
    k_rewrap.add_argument(
        "--rate", type=float, default=0.0, help="records per second (default: no limit)"
    )
    k_rewrap.set_defaults(handler=_rewrap)
    k_retire = keys_sub.add_parser("retire", help="destroy a version no record uses any more")
    add_store_args(k_retire)
    add_shares_arg(k_retire)
    k_retire.add_argument("version", type=int)
    k_retire.set_defaults(handler=_retire)
    master_cmd.register(subparsers, keys_sub)
