"""``vaultctl store copy``: move a vault from its SQLite file up to PostgreSQL.

Both stores are brought to this vault's schema first (their migrations), then every
record, key version, fingerprint and service key, caller, request id and audit record
is copied as stored (ciphertext is never decrypted), in one transaction; the copy is
verified (row counts and contents per table, then the audit chain with the audit key,
which takes the master key: the file in --data-dir, the HSM, or --shares-from -). Safe
to re-run: what is already there is skipped, and a target holding other data is refused.

The per-subject keys are not in vault.db (its backups must not hold them): with
``--subject-keys-to`` they are copied, wrapped as stored, from the subject-keys.db next to
the source into the separate PostgreSQL subject-key database; a source that has subject
keys is refused without it (its subjects' values would not open on the target).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from vault.audit.trail import AuditTrail
from vault.cli.common import CommandError, config_for
from vault.cli.kek import add_shares_arg, master_key
from vault.cli.progress import Progress
from vault.clock import SystemClock
from vault.crypto.base import KekProvider
from vault.errors import FailedPreconditionError
from vault.storage.copy import (
    TableCopy,
    copy_sqlite_to_postgres,
    copy_subject_keys,
    subject_key_count,
)
from vault.storage.postgres import PostgresStore, is_postgres_url, redact_url, same_database
from vault.storage.sqlite import SqliteStore
from vault.storage.subject_keys_postgres import PostgresSubjectKeyStore

__all__ = ["register"]

_SQLITE = "sqlite://"


async def _verify_audit(store: PostgresStore, kek: KekProvider) -> int:
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


def _checked(args: argparse.Namespace) -> tuple[Path, str]:
    """The source file and the target URL, or a one-line refusal."""
    source_url, target_url = args.source, args.target
    if not source_url.startswith(_SQLITE + "/"):
        raise CommandError("--from must be sqlite:///PATH of the vault's SQLite file")
    if not is_postgres_url(target_url):
        raise CommandError("--to must be a postgresql:// URL")
    source = Path(source_url.removeprefix(_SQLITE))
    if not source.is_file():
        raise CommandError("--from names no file (the vault's vault.db)")
    return source, target_url


def _subject_keys_checked(args: argparse.Namespace, source: Path, target_url: str) -> Path | None:
    """The source's subject-key file (None if it has none), or a one-line refusal (before
    anything is copied)."""
    keys_from = args.subject_keys_from
    if keys_from is not None and not keys_from.startswith(_SQLITE + "/"):
        raise CommandError("--subject-keys-from must be sqlite:///PATH of subject-keys.db")
    path = Path(keys_from.removeprefix(_SQLITE)) if keys_from else source.parent / "subject-keys.db"
    keys_to = args.subject_keys_to
    if keys_to is None:
        if count := subject_key_count(path):
            raise CommandError(
                f"the vault has {count} subject keys: copy them too with --subject-keys-to "
                "postgresql://… (a separate database, left out of the store's backups)"
            )
        return path
    if not is_postgres_url(keys_to):
        raise CommandError("--subject-keys-to must be a postgresql:// URL")
    if same_database(keys_to, target_url):
        raise CommandError("--subject-keys-to must name another database than --to")
    return path if path.is_file() else None


async def _copy_keys(path: Path | None, url: str) -> TableCopy:
    keys = PostgresSubjectKeyStore(url)
    await keys.open()
    try:
        if path is None:
            return TableCopy("subject_keys", 0, 0)
        return await copy_subject_keys(path, keys)
    finally:
        await keys.close()


async def _copy(args: argparse.Namespace) -> int:
    source, target_url = _checked(args)
    keys_path = _subject_keys_checked(args, source, target_url)
    # Both at this vault's schema version (the copy compares their tables one to one).
    sqlite_store = SqliteStore(source)
    await sqlite_store.open()
    try:
        # The configured master key (key file in --data-dir, HSM, or K shares with
        # --shares-from -): the audit key it unwraps verifies the copied chain.
        kek = await master_key(config_for(args), sqlite_store, args)
    finally:
        await sqlite_store.close()
    target = PostgresStore(target_url)
    await target.open()
    await target.close()

    # The bar goes to stderr with --json, so stdout stays one JSON document.
    with Progress("copy", stream=sys.stderr if args.json else sys.stdout) as bar:

        def show(table: str, done: int, total: int) -> None:
            if done == 0:
                bar.restart(f"copy {table}")
            bar.update(done, total)

        tables = await copy_sqlite_to_postgres(source, target_url, show)

    target = PostgresStore(target_url)
    await target.open()
    try:
        audited = await _verify_audit(target, kek)
    finally:
        await target.close()
    if args.subject_keys_to is not None:
        tables.append(await _copy_keys(keys_path, args.subject_keys_to))
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
        "--subject-keys-to",
        help="postgresql://… of the separate subject-key database to copy the per-subject "
        "keys into (the target vault's subject_key_database_url)",
    )
    copy.add_argument(
        "--subject-keys-from",
        help="sqlite:///PATH of the subject-key file (default: subject-keys.db beside --from)",
    )
    copy.add_argument(
        "--data-dir",
        type=Path,
        help="the vault's data dir: its master key (file, or the configured HSM or shares) "
        "verifies the audit chain",
    )
    copy.add_argument("--config", type=Path, help="TOML config file")
    add_shares_arg(copy)
    copy.add_argument("--json", action="store_true")
    copy.set_defaults(handler=_copy)
