"""``vaultctl subjects export|erase|hold|release``: data-subject requests from the CLI.

They work on the store directly, as ``keys`` and ``callers`` do (the master key file is
needed), through the same use cases as SubjectService, and are audited with the CLI's
operator (``vaultctl:<user>``) as the caller. What the CLI cannot reach: CVCs held in a
running server's memory (they expire within cvc_ttl), and a server's cached subject key,
which it re-reads within 2 s (domain/subject_keys.py).
"""

from __future__ import annotations

import argparse
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict
from typing import Any

from vault.auth.policy import SCOPE_SUBJECTS, Caller
from vault.cli import audit_cmd
from vault.cli.common import add_store_args, iso_time, vault_of
from vault.cli.kek import add_shares_arg
from vault.domain.model import Address, RequestContext, Value
from vault.domain.subjects import SubjectExport, SubjectRequests
from vault.domain.validation import normalize_subject

__all__ = ["register"]


@asynccontextmanager
async def _subjects(args: argparse.Namespace) -> AsyncIterator[SubjectRequests]:
    """The subject use cases over the data dir's store, audited as the operator."""
    async with vault_of(args, need_keys=True) as vault:
        yield (await vault.services()).subjects


def _caller(args: argparse.Namespace) -> Caller:
    return Caller(audit_cmd.operator_name(), args.tenant, frozenset({SCOPE_SUBJECTS}))


def _context() -> RequestContext:
    return RequestContext(request_id=str(uuid.uuid4()))


def _value(value: Value) -> Any:
    return asdict(value) | {"lines": list(value.lines)} if isinstance(value, Address) else value


def _document(subject: str, tenant: str, export: SubjectExport) -> dict[str, Any]:
    return {
        "subject": subject,
        "tenant": tenant,
        "held": export.held,
        "records": [
            {
                "token": r.token,
                "kind": f"DATA_KIND_{r.kind.name}",
                "address" if isinstance(r.value, Address) else "text": _value(r.value),
                "metadata": r.metadata,
                "createTime": iso_time(r.created_at),
                "expireTime": iso_time(r.expires_at),
            }
            for r in export.records
        ],
        "reveals": [
            {
                "time": iso_time(v.time),
                "caller": v.caller,
                "purpose": v.purpose,
                "token": v.token,
                "requestId": v.request_id,
            }
            for v in export.reveals
        ],
    }


async def _export(args: argparse.Namespace) -> int:
    async with _subjects(args) as subjects:
        export = await subjects.export(
            _caller(args), args.subject, purpose=args.purpose, request=_context()
        )
    doc = _document(normalize_subject(args.subject), args.tenant, export)
    if args.json:
        print(json.dumps(doc, indent=2, ensure_ascii=False))
        return 0
    held = " (legal hold)" if export.held else ""
    print(f"subject {doc['subject']} in tenant {args.tenant}{held}")
    # The export is the subject's data, printed for the operator who asked for it (and
    # audited as such); it goes nowhere else, no log line included.
    for rec in doc["records"]:
        value = rec.get("text", rec.get("address"))
        print(f"{rec['token']}\t{rec['kind']}\t{rec['createTime']}\t{json.dumps(value)}")
    for rev in doc["reveals"]:
        purpose = json.dumps(rev["purpose"])
        print(f"revealed {rev['time']}\t{rev['token']}\tby {rev['caller']}\t{purpose}")
    return 0


async def _erase(args: argparse.Namespace) -> int:
    async with _subjects(args) as subjects:
        erased = await subjects.erase(_caller(args), args.subject, args.reason, request=_context())
    print(f"erased {erased} values of the subject; its key is destroyed")
    return 0


async def _hold(args: argparse.Namespace) -> int:
    hold = args.subjects_command == "hold"
    async with _subjects(args) as subjects:
        changed = await subjects.set_legal_hold(
            _caller(args), args.subject, hold=hold, reason=args.reason, request=_context()
        )
    if hold:
        print("the subject is under legal hold" + ("" if changed else " (it was already)"))
    else:
        print("the legal hold is released")
    return 0


def register(subparsers: Any) -> None:
    """Add ``subjects ...`` to vaultctl's parser."""
    subjects = subparsers.add_parser("subjects", help="data-subject requests")
    s_sub = subjects.add_subparsers(dest="subjects_command", required=True)

    def command(name: str, help_text: str, *, reason: bool) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = s_sub.add_parser(name, help=help_text)
        add_store_args(p)
        add_shares_arg(p)
        p.add_argument("subject", help="the data subject's id, as given at tokenize")
        p.add_argument("--tenant", required=True, help="the subject's tenant")
        if reason:
            p.add_argument("--reason", required=True, help="why (audited)")
        return p

    export = command("export", "every value held for the subject, and its reveals", reason=False)
    export.add_argument(
        "--purpose",
        required=True,
        help="why the export is needed (audited as the reveal of every exported value)",
    )
    export.add_argument("--json", action="store_true", help="one JSON document")
    export.set_defaults(handler=_export)
    command("erase", "remove the subject's values and destroy its key", reason=True).set_defaults(
        handler=_erase
    )
    command(
        "hold", "put the subject under legal hold (no erasure, no expiry)", reason=True
    ).set_defaults(handler=_hold)
    command("release", "release the subject's legal hold", reason=True).set_defaults(handler=_hold)
