"""``vaultctl retention set|clear|report``: maximum ages per tenant and data kind.

Policies are stored in the store; every running server's retention job picks a change
up at its next run (``retention_interval``), without a restart. ``report`` is the
quarterly check PCI DSS 3.2.1 asks for, in one line: per tenant and kind the policy,
how many values are past it now (``due``: the job removes them at its next run), how
many of those are kept by a legal hold, and how many the job has purged (and when).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from vault.audit.base import ACTION_RETENTION_CLEAR, ACTION_RETENTION_SET, OUTCOME_ERROR
from vault.cli import audit_cmd
from vault.cli.common import CommandError, add_store_args, iso_time, vault_of
from vault.cli.kek import add_shares_arg
from vault.domain.model import DataKind
from vault.domain.retention import parse_kind, parse_max_age, retention_stats

__all__ = ["register"]


def _kind(text: str) -> DataKind:
    try:
        return parse_kind(text)
    except ValueError as exc:
        raise CommandError(f"--kind: {exc}") from None


async def _set(args: argparse.Namespace) -> int:
    kind = _kind(args.kind)
    try:
        max_age = parse_max_age(args.max_age)
    except ValueError as exc:
        raise CommandError(f"--max-age: {exc}") from None
    # The master key before the change: it must be recorded.
    async with vault_of(args, need_keys=True) as vault:
        store = vault.store
        await store.set_retention_policy(args.tenant, int(kind), max_age, vault.clock.now())
        await audit_cmd.record_operator_event(
            vault.config,
            store,
            ACTION_RETENTION_SET,
            args.tenant,
            {"kind": kind.name, "max_age_seconds": f"{max_age:g}"},
            kek=await vault.master_key(),
        )
    print(f"{kind.name} values of tenant {args.tenant} are purged {max_age:g} s after creation")
    return 0


async def _clear(args: argparse.Namespace) -> int:
    kind = _kind(args.kind)
    # The master key before the change: it must be recorded.
    async with vault_of(args, need_keys=True) as vault:
        store = vault.store
        cleared = await store.clear_retention_policy(args.tenant, int(kind))
        await audit_cmd.record_operator_event(
            vault.config,
            store,
            ACTION_RETENTION_CLEAR,
            args.tenant,
            {"kind": kind.name},
            kek=await vault.master_key(),
            outcome="ok" if cleared else OUTCOME_ERROR,
            reason="" if cleared else "RETENTION_POLICY_NOT_FOUND",
        )
    if not cleared:
        raise CommandError("no retention policy for that tenant and kind")
    print(f"no maximum age for {kind.name} values of tenant {args.tenant} any more")
    return 0


def _kind_name(number: int) -> str:
    try:
        return DataKind(number).name
    except ValueError:
        return str(number)


async def _report(args: argparse.Namespace) -> int:
    async with vault_of(args) as vault:
        now = vault.clock.now()
        policies = {(p.tenant, p.kind): p for p in await vault.store.retention_policies()}
        stats = await retention_stats(vault.store, now)
    rows: list[dict[str, Any]] = []
    for s in stats:
        policy = policies.get((s.tenant, s.kind))
        rows.append(
            {
                "tenant": s.tenant,
                "kind": _kind_name(s.kind),
                "max_age_seconds": policy.max_age if policy else None,
                "policy_set": iso_time(policy.set_at) if policy else None,
                "due": s.due,
                "held": s.held,
                "purged": s.purged,
                "last_purge": iso_time(s.last_purge_at),
            }
        )
    overdue = sum(r["due"] for r in rows)
    if args.json:
        print(json.dumps({"time": iso_time(now), "policies": rows, "due": overdue}, indent=2))
    else:
        print("tenant\tkind\tmax age (d)\tdue\theld\tpurged\tlast purge")
        for r in rows:
            age = "-" if r["max_age_seconds"] is None else f"{r['max_age_seconds'] / 86400:g}"
            print(
                f"{r['tenant']}\t{r['kind']}\t{age}\t{r['due']}\t{r['held']}\t"
                f"{r['purged']}\t{r['last_purge'] or '-'}"
            )
    if args.check and overdue:
        raise CommandError(f"{overdue} values are past their maximum age")
    return 0


def register(subparsers: Any) -> None:
    """Add ``retention ...`` to vaultctl's parser."""
    retention = subparsers.add_parser("retention", help="maximum ages per tenant and data kind")
    r_sub = retention.add_subparsers(dest="retention_command", required=True)
    r_set = r_sub.add_parser("set", help="set the maximum age of a tenant's values of a kind")
    add_store_args(r_set)
    add_shares_arg(r_set)
    r_set.add_argument("--tenant", required=True)
    r_set.add_argument("--kind", required=True, help="data kind, e.g. PAN or EMAIL")
    r_set.add_argument("--max-age", required=True, help="e.g. 400d, 12h, 90m, 3600s")
    r_set.set_defaults(handler=_set)
    r_clear = r_sub.add_parser("clear", help="remove a tenant's maximum age for a kind")
    add_store_args(r_clear)
    add_shares_arg(r_clear)
    r_clear.add_argument("--tenant", required=True)
    r_clear.add_argument("--kind", required=True)
    r_clear.set_defaults(handler=_clear)
    r_report = r_sub.add_parser(
        "report", help="per tenant and kind: policy, due now, held, purged (quarterly check)"
    )
    add_store_args(r_report)
    r_report.add_argument("--json", action="store_true")
    r_report.add_argument(
        "--check", action="store_true", help="exit 1 if any value is past its maximum age"
    )
    r_report.set_defaults(handler=_report)
