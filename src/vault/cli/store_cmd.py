"""``vaultctl store copy``: move a vault from its SQLite file up to PostgreSQL.

Both stores are brought to this vault's schema first (their migrations), then every
record, key version, fingerprint and service key, caller, request id and audit record
is copied as stored (ciphertext is never decrypted), in one transaction; the copy is
verified (row counts and contents per table, then the audit chain with the audit key,
which takes the master key file in --data-dir). Safe to re-run: what is already there
is skipped, and a target holding other data is refused.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from vault.audit.trail import AuditTrail
from vault.cli.common import CommandError, config_for
from vault.clock import SystemClock
from vault.crypto.keyfile import KeyFileKek
from vault.errors import FailedPreconditionError
from vault.storage.copy import copy_sqlite_to_postgres
from vault.storage.postgres import PostgresStore, is_postgres_url, redact_url
from vault.storage.sqlite import SqliteStore

__all__ = ["register"]

_SQLITE = "sqlite://"


async def _verify_audit(store: PostgresStore, kek: KeyFileKek) -> int:
    """Records in the copied chain, once verified; CommandError naming a break."""
    try:
        trail = await AuditTrail.open(store, kek, SystemClock(), None, create=False)
    except FailedPreconditionError as exc:
        if exc.reason != "AUDIT_KEY_MISSING":
            raise
        if await store.audit_records(0, 1) or await store.audit_head() is not None:
            raise CommandError("audit records were copied but the audit key is missing") from None
        return 0
    try:
        result = await trail.verify()
    finally:
        trail.close()
    if result.broken is not None:
        raise CommandError(f"the copied audit trail does not verify: {result.broken}")
    return result.records


def _checked(args: argparse.Namespace) -> tuple[Path, str, KeyFileKek]:
    """The source file, the target URL and the master key, or a one-line refusal."""
    source_url, target_url = args.source, args.target
    if not source_url.startswith(_SQLITE + "/"):
        raise CommandError("--from must be sqlite:///PATH of the vault's SQLite file")
    if not is_postgres_url(target_url):
        raise CommandError("--to must be a postgresql:// URL")
    source = Path(source_url.removeprefix(_SQLITE))
    if not source.is_file():
        raise CommandError("--from names no file (the vault's vault.db)")
    cfg = config_for(args)
    if not cfg.master_key_path.exists():
        raise CommandError(
            "the vault's master key file is needed in --data-dir to verify the audit chain"
        )
    return source, target_url, KeyFileKek.load(cfg.master_key_path)


async def _copy(args: argparse.Namespace) -> int:
    source, target_url, kek = _checked(args)
    # Both at this vault's schema version (the copy compares their tables one to one).
    sqlite_store = SqliteStore(source)
    await sqlite_store.open()
    await sqlite_store.close()
    target = PostgresStore(target_url)
    await target.open()
    await target.close()

    tables = await copy_sqlite_to_postgres(source, target_url)

    target = PostgresStore(target_url)
    await target.open()
    try:
        audited = await _verify_audit(target, kek)
    finally:
        await target.close()
    summary: dict[str, Any] = {
        "to": redact_url(target_url),
        "tables": {t.table: {"rows": t.rows, "copied": t.copied} for t in tables},
        "audit_records_verified": audited,
    }
    if args.json:
        print(json.dumps(summary))
    else:
        for t in tables:
            print(f"{t.table}: {t.rows} rows ({t.copied} copied now)")
        print(f"audit trail intact: {audited} records")
        print(f"copy complete and verified: {redact_url(target_url)}")
    return 0


def register(subparsers: Any) -> None:
    """Add ``store copy`` to vaultctl's parser."""
    store = subparsers.add_parser("store", help="the vault's store")
    s_sub = store.add_subparsers(dest="store_command", required=True)
    copy = s_sub.add_parser(
        "copy",
        help="copy an SQLite vault into PostgreSQL as is (verified, safe to re-run)",
    )
    copy.add_argument(
        "--from", dest="source", required=True, help="sqlite:///PATH/vault.db to copy from"
    )
    copy.add_argument(
        "--to", dest="target", required=True, help="postgresql://USER@HOST[:PORT]/DB to copy to"
    )
    copy.add_argument(
        "--data-dir",
        type=Path,
        help="where the vault's master.key is (needed to verify the audit chain)",
    )
    copy.add_argument("--config", type=Path, help="TOML config file")
    copy.add_argument("--json", action="store_true")
    copy.set_defaults(handler=_copy)
