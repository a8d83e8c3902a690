"""``vaultctl audit verify|tail``, and the records vaultctl itself adds (caller changes)."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vault.audit.base import OUTCOME_OK, AuditEvent
from vault.audit.trail import AuditTrail, ChainBreak, VerifyResult, record_dict, record_line
from vault.cli.common import CommandError, add_store_args, vault_of
from vault.cli.kek import add_shares_arg
from vault.clock import SystemClock
from vault.config import Config
from vault.crypto.base import KekProvider
from vault.errors import FailedPreconditionError
from vault.storage.base import AuditHead, Store
from vault.storage.sql.audit_index import IndexProblem, index_disagreement
from vault.wiring import open_audit_trail

__all__ = [
    "open_operator_trail",
    "open_trail",
    "operator_name",
    "record_operator_event",
    "register",
]

_TAIL_DEFAULT = 20
_FOLLOW_SECONDS = 1.0
_FOLLOW_CHUNK = 1000


def operator_name() -> str:
    """Who ran vaultctl, as the trail names them (the OS user)."""
    try:
        return f"vaultctl:{getpass.getuser()}"
    except (OSError, KeyError):
        return "vaultctl"


async def open_trail(cfg: Config, store: Store, *, create: bool, kek: KekProvider) -> AuditTrail:
    """The trail as a command opens it (exported to files only, never stdout)."""
    return await open_audit_trail(cfg, store, kek, SystemClock(), create=create, serving=False)


async def open_operator_trail(cfg: Config, store: Store, kek: KekProvider) -> AuditTrail:
    """The audit trail for records vaultctl adds (created if absent); close it after."""
    return await open_trail(cfg, store, create=True, kek=kek)


async def record_operator_event(
    cfg: Config,
    store: Store,
    action: str,
    tenant: str,
    detail: Mapping[str, str],
    *,
    kek: KekProvider,
    outcome: str = OUTCOME_OK,
    reason: str = "",
) -> None:
    """Append one record of a change made with vaultctl (durable when this returns);
    ``kek``: the master key the audit key is wrapped under."""
    trail = await open_trail(cfg, store, create=True, kek=kek)
    try:
        await trail.record(
            [
                AuditEvent(
                    SystemClock().now(),
                    operator_name(),
                    tenant,
                    action,
                    outcome=outcome,
                    reason=reason,
                    detail=detail,
                )
            ]
        )
    finally:
        trail.close()


def _witness(path: Path | None) -> tuple[list[AuditHead], list[tuple[int, bytes]]]:
    """The heads and records published in a file of the audit sink's lines (JSON lines:
    ``{"audit_head": {"seq", "mac"}}`` and records with ``seq`` and ``mac``)."""
    heads: list[AuditHead] = []
    records: list[tuple[int, bytes]] = []
    if path is None:
        return heads, records
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeError):
        raise CommandError("--witness names no readable file") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            if "audit_head" in item:
                head = item["audit_head"]
                heads.append(AuditHead(int(head["seq"]), bytes.fromhex(head["mac"])))
            else:
                records.append((int(item["seq"]), bytes.fromhex(item["mac"])))
        except (ValueError, KeyError, TypeError):
            raise CommandError(f"--witness line {number} is not an audit sink line") from None
    return heads, records


async def _verify(args: argparse.Namespace) -> int:
    if args.expect_seq is not None and args.expect_seq < 0:
        raise CommandError("--expect-seq must be 0 or more")
    heads, records = _witness(args.witness)
    async with vault_of(args) as vault:
        try:
            trail = await vault.audit_trail(create=False)
        except FailedPreconditionError as exc:
            if exc.reason != "AUDIT_KEY_MISSING":
                raise
            store = vault.store
            if await store.audit_records(0, 1) or await store.audit_head() is not None:
                raise CommandError("audit records exist but the audit key is missing") from None
            result = None
        else:
            result = await trail.verify()
            if result.broken is None and (heads or records or args.expect_seq is not None):
                witnessed = await trail.check_witness(heads, args.expect_seq, records)
                result = VerifyResult(result.records, witnessed)
        # h14a: the token index must agree with the verified records (sql/audit_index.py).
        index = await index_disagreement(vault.store)
    if result is None and (heads or records or args.expect_seq):
        raise CommandError("the store has no audit trail but records were published")
    count = result.records if result is not None else 0
    broken: ChainBreak | IndexProblem | None = result.broken if result is not None else None
    broken = broken if broken is not None else index
    if args.json:
        out: dict[str, Any] = {"intact": broken is None, "records": count}
        if broken is not None:
            out |= {"seq": broken.seq, "problem": broken.problem}
        print(json.dumps(out))
    if broken is not None:
        raise CommandError(str(broken))
    if not args.json:
        print(f"audit trail intact: {count} records")
    return 0


def _print(rows: list[Any], *, as_json: bool) -> None:
    for row in rows:
        if as_json:
            print(json.dumps(record_dict(row), separators=(",", ":"), ensure_ascii=False))
        else:
            print(record_line(row))


async def _tail(args: argparse.Namespace) -> int:
    if args.n < 0:
        raise CommandError("-n must be 0 or more")
    async with vault_of(args) as vault:
        store = vault.store
        head = await store.audit_head()
        last = max(0, (head.seq if head is not None else 0) - args.n)
        rows = await store.audit_records(last, args.n) if args.n else []
        _print(rows, as_json=args.json)
        last = rows[-1].seq if rows else (head.seq if head is not None else 0)
        while args.follow:
            await asyncio.sleep(args.interval)
            rows = await store.audit_records(last, _FOLLOW_CHUNK)
            _print(rows, as_json=args.json)
            if rows:
                last = rows[-1].seq
    return 0


def register(subparsers: Any) -> None:
    """Add ``audit verify`` and ``audit tail`` to vaultctl's parser."""
    audit = subparsers.add_parser("audit", help="the tamper-evident audit trail")
    a_sub = audit.add_subparsers(dest="audit_command", required=True)
    verify = a_sub.add_parser(
        "verify",
        help="walk the chain; exit 0 when intact, 1 naming the first bad record",
    )
    add_store_args(verify)
    add_shares_arg(verify)
    verify.add_argument("--json", action="store_true")
    verify.add_argument(
        "--expect-seq",
        type=int,
        metavar="N",
        help="fail unless the chain reaches seq N (a head you saw published)",
    )
    verify.add_argument(
        "--witness",
        type=Path,
        metavar="FILE",
        help="a copy of the audit sink's lines kept outside the database: fail if a "
        "published head or record is gone or was rewritten",
    )
    verify.set_defaults(handler=_verify)
    tail = a_sub.add_parser("tail", help="print the newest records")
    add_store_args(tail)
    tail.add_argument(
        "-n", type=int, default=_TAIL_DEFAULT, help=f"records to show (default {_TAIL_DEFAULT})"
    )
    tail.add_argument("--follow", action="store_true", help="keep printing new records")
    tail.add_argument(
        "--interval", type=float, default=_FOLLOW_SECONDS, help="seconds between polls"
    )
    tail.add_argument("--json", action="store_true", help="one JSON object per line")
    tail.set_defaults(handler=_tail)
