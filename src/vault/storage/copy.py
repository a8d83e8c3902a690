"""Copy an SQLite store into a PostgreSQL one, row by row, as stored.

Every table both stores share is copied (token records with their ciphertext, key
versions with their wrapped keys, fingerprint and service keys, the custodian-share
facts of a split master key, callers, request-id reservations, the audit log and its
sealed head, the latest rewrap run's progress); nothing is decrypted, nothing is
re-encoded but the column types (SQLite's 0/1 becomes a boolean, and so on). Leases and
the migrations table are not data and are not copied.

All of it happens in one PostgreSQL transaction: a copy that fails leaves the target as
it was. Re-running is safe: rows already in the target are skipped (ON CONFLICT DO
NOTHING), and the copy is then checked table by table — the same number of rows and the
same multiset of rows on both sides — so a target holding anything else (other rows, or
a row of the same key with other contents) is refused and rolled back.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from vault.errors import FailedPreconditionError
from vault.storage.base import SubjectKeyStore
from vault.storage.postgres_open import open_error, redact_url

__all__ = [
    "CopyError",
    "CopyProgress",
    "TableCopy",
    "copy_sqlite_to_postgres",
    "copy_subject_keys",
    "subject_key_count",
]

# Bookkeeping and coordination, not data: never copied. The target has its own
# migrations. A lease (rewrap_lease, job_leases) names a process of the source, which
# is not running on the target: copied, it would keep the target's replicas from their
# background jobs (and a `keys rewrap`) until it expired, and show a rewrap as running
# that nobody runs. Left behind, a run the source did not finish shows as interrupted
# (its progress row is copied, without a lease), and the next `keys rewrap` on the
# target picks up the rows still on older versions.
_NOT_COPIED = frozenset({"schema_migrations", "rewrap_lease", "job_leases"})
# Referenced tables before the tables that reference them; tables added by later
# migrations follow in name order (a new table with a foreign key goes into this list).
_ORDER = (
    "key_versions",
    "fingerprint_keys",
    "service_keys",
    "kek_shares",
    "callers",
    "tokens",
    "request_ids",
    "audit_log",
    "audit_head",
    "rewrap_progress",
    "subject_holds",
    "retention_policies",
    "retention_purges",
)
_BATCH = 1000

# (table, rows copied so far, rows in the source table): for a progress bar.
CopyProgress = Callable[[str, int, int], None]
_MOD = 2**256


class CopyError(FailedPreconditionError):
    """The copy cannot be made (or would not be faithful); the target is unchanged."""

    reason = "STORE_COPY_REFUSED"


@dataclass(frozen=True, slots=True)
class TableCopy:
    table: str
    rows: int  # rows in the source (and, after the copy, in the target)
    copied: int  # rows this run added to the target (0 on a re-run)


def _converter(data_type: str) -> Callable[[Any], Any]:
    """SQLite's value as the PostgreSQL column's type (None stays None)."""
    if data_type == "boolean":
        return lambda v: None if v is None else bool(v)
    if data_type in {"double precision", "real", "numeric"}:
        return lambda v: None if v is None else float(v)
    if data_type in {"bigint", "integer", "smallint"}:
        return lambda v: None if v is None else int(v)
    if data_type == "bytea":
        return lambda v: None if v is None else bytes(v)
    return lambda v: v


def _row_digest(row: Sequence[Any]) -> int:
    # repr is exact for every value these tables hold (str, int, float, bytes, bool).
    return int.from_bytes(hashlib.sha256(repr(tuple(row)).encode()).digest(), "big")


def _source_rows(
    src: sqlite3.Connection, table: str, columns: Sequence[str]
) -> Iterator[list[Any]]:
    cursor = src.execute(f"SELECT {', '.join(columns)} FROM {table}")  # noqa: S608 - catalog names
    while batch := cursor.fetchmany(_BATCH):
        yield [tuple(r) for r in batch]


async def _target_columns(conn: asyncpg.Connection[asyncpg.Record]) -> dict[str, dict[str, str]]:
    rows = await conn.fetch(
        "SELECT table_name, column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = current_schema() ORDER BY table_name, ordinal_position"
    )
    tables: dict[str, dict[str, str]] = {}
    for row in rows:
        tables.setdefault(row[0], {})[row[1]] = row[2]
    return tables


def _source_columns(src: sqlite3.Connection) -> dict[str, list[str]]:
    names = [
        r[0]
        for r in src.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
    ]
    return {n: [r[1] for r in src.execute(f"PRAGMA table_info({n})")] for n in names}


def _plan(source: dict[str, list[str]], target: dict[str, dict[str, str]]) -> list[str]:
    src_tables = set(source) - _NOT_COPIED
    tgt_tables = set(target) - _NOT_COPIED
    if src_tables != tgt_tables:
        raise CopyError(
            "the two stores have different tables (run both at the same vault version): "
            + ", ".join(sorted(src_tables ^ tgt_tables))
        )
    for table in sorted(src_tables):
        if set(source[table]) != set(target[table]):
            raise CopyError(f"table {table} has different columns in the two stores")
    return [t for t in _ORDER if t in src_tables] + sorted(src_tables - set(_ORDER))


def _open_readonly(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)


async def copy_sqlite_to_postgres(
    source: Path, target_url: str, progress: CopyProgress | None = None
) -> list[TableCopy]:
    """Copy every data table of the SQLite file into the (migrated) PostgreSQL database;
    ``progress(table, rows_copied, rows_in_table)`` is told after each batch."""
    src = _open_readonly(source)
    try:
        try:
            conn = await asyncpg.connect(target_url, timeout=10)
        except Exception as exc:  # noqa: BLE001 - every cause becomes one value-free line
            raise open_error(exc, redact_url(target_url)) from None
        try:
            return await _copy(src, conn, progress)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, sqlite3.Error) as exc:
            # The driver's message can quote values: only the kind of failure is told.
            msg = f"the copy failed ({type(exc).__name__}); the target is unchanged"
            raise CopyError(msg) from None
        finally:
            await conn.close()
    finally:
        src.close()


async def _copy(
    src: sqlite3.Connection,
    conn: asyncpg.Connection[asyncpg.Record],
    progress: CopyProgress | None,
) -> list[TableCopy]:
    target = await _target_columns(conn)
    source = _source_columns(src)
    tables = _plan(source, target)
    report: list[TableCopy] = []
    # One transaction: a refused or failed copy leaves the target untouched.
    async with conn.transaction():
        for table in tables:
            columns = list(target[table])  # the target's order; the source has the same set
            convert = [_converter(target[table][c]) for c in columns]
            column_list = ", ".join(columns)
            marks = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
            before = int(await conn.fetchval(f"SELECT count(*) FROM {table}"))  # noqa: S608
            rows = 0
            digest = 0
            total = int(src.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # noqa: S608
            if progress is not None:
                progress(table, 0, total)
            insert = (
                f"INSERT INTO {table} ({column_list}) VALUES ({marks}) "  # noqa: S608 - catalog names
                "ON CONFLICT DO NOTHING"
            )
            for batch in _source_rows(src, table, columns):
                typed = [tuple(f(v) for f, v in zip(convert, row, strict=True)) for row in batch]
                await conn.executemany(insert, typed)
                rows += len(typed)
                digest = (digest + sum(_row_digest(r) for r in typed)) % _MOD
                if progress is not None:
                    progress(table, rows, total)
            after = int(await conn.fetchval(f"SELECT count(*) FROM {table}"))  # noqa: S608
            if after != rows:
                raise CopyError(f"the target holds other data in {table}; nothing was copied")
            target_digest = 0
            async for row in conn.cursor(f"SELECT {column_list} FROM {table}"):  # noqa: S608
                target_digest = (target_digest + _row_digest(tuple(row))) % _MOD
            if target_digest != digest:
                raise CopyError(f"the target holds other data in {table}; nothing was copied")
            report.append(TableCopy(table, rows, after - before))
        await _advance_identities(conn, target, tables)
    return report


async def _advance_identities(
    conn: asyncpg.Connection[asyncpg.Record],
    target: dict[str, dict[str, str]],
    tables: Sequence[str],
) -> None:
    """Rows were copied with their ids: new rows must be numbered after them."""
    rows = await conn.fetch(
        "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND is_identity = 'YES'"
    )
    for table, column in rows:
        if table in tables and column in target[table]:
            await conn.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'), "  # noqa: S608
                f"GREATEST((SELECT max({column}) FROM {table}), 1))"
            )


# -- subject keys ------------------------------------------------------------------------
# They live apart from the store (subject-keys.db; a database of their own on PostgreSQL)
# and are copied apart: wrapped as stored, never unwrapped, through the SubjectKeyStore
# protocol, whose first-writer-wins put makes a re-run a no-op.


def subject_key_count(source: Path) -> int:
    """Subject keys in an SQLite subject-key file (0 if it does not exist)."""
    if not source.is_file():
        return 0
    src = _open_readonly(source)
    try:
        return int(src.execute("SELECT count(*) FROM subject_keys").fetchone()[0])
    except sqlite3.Error:
        return 0
    finally:
        src.close()


async def copy_subject_keys(source: Path, target: SubjectKeyStore) -> TableCopy:
    """Copy every wrapped subject key of the SQLite file into the (open) target store;
    a key the target holds with other bytes is refused (CopyError)."""
    src = _open_readonly(source)
    rows = copied = 0
    try:
        for batch in _source_rows(
            src, "subject_keys", ("tenant", "subject_ref", "wrapped_key", "created_at")
        ):
            for tenant, ref, wrapped, created_at in batch:
                had = await target.subject_key(tenant, bytes(ref))
                stored = await target.put_subject_key(
                    tenant, bytes(ref), bytes(wrapped), float(created_at)
                )
                if stored != bytes(wrapped):
                    raise CopyError("the target holds other data in subject_keys")
                rows += 1
                copied += had is None
    except sqlite3.Error as exc:
        msg = f"the subject-key copy failed ({type(exc).__name__})"
        raise CopyError(msg) from None
    finally:
        src.close()
    return TableCopy("subject_keys", rows, copied)
