"""The reads that are the same query in every dialect, written once.

A store mixes ``SqlReads`` in and supplies ``_dialect`` and ``_rows`` (one query on its
read path). The SQL below is written with ``?``; ``Dialect.sql`` numbers it for
PostgreSQL once per statement. The hot token lookups are not here: each store batches
them its own way.
"""

from __future__ import annotations

from typing import Any

from vault.storage.base import (
    AuditHead,
    AuditRow,
    CallerRow,
    KeyVersionRow,
    RetentionPolicy,
    RetentionPurges,
    ShareSchemeRow,
    TokenRecord,
    WrappedKeyKind,
    WrappedKeyRow,
)
from vault.storage.sql.codecs import audit_from_row, caller_from_row, token_from_row
from vault.storage.sql.columns import (
    AUDIT_COLUMNS,
    CALLER_COLUMNS,
    TOKEN_COLUMNS,
    WRAPPED_KEYS_SQL,
)
from vault.storage.sql.dialect import Dialect

__all__ = ["VERIFIER_BYTES", "SqlReads"]

# SHA-256 share verifiers are stored back to back in one column.
VERIFIER_BYTES = 32


class SqlReads:
    """Single-query reads over the shared schema."""

    _dialect: Dialect

    async def _rows(self, sql: str, *args: Any) -> list[Any]:
        raise NotImplementedError

    async def _read(self, sql: str, *args: Any) -> list[Any]:
        return await self._rows(self._dialect.sql(sql), *args)

    async def key_versions(self) -> list[KeyVersionRow]:
        rows = await self._read(
            "SELECT version, state, wrapped_key, kek_id, created_at, encryptions "
            "FROM key_versions ORDER BY version"
        )
        return [
            KeyVersionRow(
                int(r[0]), r[1], None if r[2] is None else bytes(r[2]), r[3], r[4], int(r[5])
            )
            for r in rows
        ]

    async def records_by_key_version(self) -> dict[int, int]:
        rows = await self._read(
            "SELECT key_version, count(*) FROM tokens GROUP BY key_version ORDER BY key_version"
        )
        return {int(r[0]): int(r[1]) for r in rows}

    async def _wrapped_key(self, table: str, column: str, name: str) -> bytes | None:
        rows = await self._read(f"SELECT wrapped_key FROM {table} WHERE {column} = ?", name)  # noqa: S608 - constant names
        return bytes(rows[0][0]) if rows else None

    async def fingerprint_key(self, tenant: str) -> bytes | None:
        return await self._wrapped_key("fingerprint_keys", "tenant", tenant)

    async def service_key(self, name: str) -> bytes | None:
        return await self._wrapped_key("service_keys", "name", name)

    async def wrapped_keys(self) -> list[WrappedKeyRow]:
        # One statement: one snapshot of the three places wrapped keys live.
        rows = await self._read(WRAPPED_KEYS_SQL)
        return [WrappedKeyRow(WrappedKeyKind(r[0]), r[1], bytes(r[2]), r[3]) for r in rows]

    async def share_scheme(self) -> ShareSchemeRow | None:
        rows = await self._read(
            "SELECT kek_id, threshold, share_count, verifiers, created_at FROM kek_shares "
            "WHERE id = 1"
        )
        if not rows:
            return None
        kek_id, threshold, count, verifiers, created_at = rows[0]
        blob = bytes(verifiers)
        digests = tuple(blob[i : i + VERIFIER_BYTES] for i in range(0, len(blob), VERIFIER_BYTES))
        return ShareSchemeRow(kek_id, int(threshold), int(count), digests, float(created_at))

    async def caller_by_key_id(self, key_id: str) -> CallerRow | None:
        rows = await self._read(f"SELECT {CALLER_COLUMNS} FROM callers WHERE key_id = ?", key_id)  # noqa: S608 - constant
        return caller_from_row(rows[0]) if rows else None

    async def caller_by_cert_identity(self, identity: str) -> CallerRow | None:
        rows = await self._read(
            f"SELECT {CALLER_COLUMNS} FROM callers WHERE cert_identity = ?",  # noqa: S608 - constant
            identity,
        )
        return caller_from_row(rows[0]) if rows else None

    async def callers(self) -> list[CallerRow]:
        rows = await self._read(f"SELECT {CALLER_COLUMNS} FROM callers ORDER BY name")  # noqa: S608 - constant
        return [caller_from_row(row) for row in rows]

    async def audit_records(self, after_seq: int, limit: int) -> list[AuditRow]:
        rows = await self._read(
            f"SELECT {AUDIT_COLUMNS} FROM audit_log WHERE seq > ? ORDER BY seq LIMIT ?",  # noqa: S608 - constant
            after_seq,
            limit,
        )
        return [audit_from_row(row) for row in rows]

    async def audit_head(self) -> AuditHead | None:
        # seq 0: the genesis head, sealed with the audit key before any record.
        rows = await self._read("SELECT seq, mac FROM audit_head WHERE id = 1")
        return AuditHead(int(rows[0][0]), bytes(rows[0][1])) if rows else None

    async def subject_tokens(self, tenant: str, subject_ref: bytes) -> list[TokenRecord]:
        rows = await self._read(
            f"SELECT {TOKEN_COLUMNS} FROM tokens "  # noqa: S608 - constant
            "WHERE tenant = ? AND subject_ref = ? ORDER BY id",
            tenant,
            subject_ref,
        )
        return [token_from_row(row) for row in rows]

    async def subject_held(self, tenant: str, subject_ref: bytes) -> bool:
        rows = await self._read(
            "SELECT 1 FROM subject_holds WHERE tenant = ? AND subject_ref = ?",
            tenant,
            subject_ref,
        )
        return bool(rows)

    async def retention_policies(self) -> list[RetentionPolicy]:
        rows = await self._read(
            "SELECT tenant, kind, max_age, set_at FROM retention_policies ORDER BY tenant, kind"
        )
        return [RetentionPolicy(r[0], int(r[1]), float(r[2]), float(r[3])) for r in rows]

    async def retention_purges(self) -> list[RetentionPurges]:
        rows = await self._read("SELECT tenant, kind, purged, last_purge_at FROM retention_purges")
        return [RetentionPurges(r[0], int(r[1]), int(r[2]), float(r[3])) for r in rows]
