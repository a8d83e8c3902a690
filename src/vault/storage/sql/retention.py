"""Retention, written once where the SQL is the same: policies, the age boundary, the
due/held counts and the purge tally (``RetentionSql`` is mixed into both stores; how
each purges, in windows on SQLite's reader or per transaction on PostgreSQL, is the
store's own).
"""

from __future__ import annotations

from vault.storage.base import RetentionCounts
from vault.storage.sql.codecs import retention_counts
from vault.storage.sql.columns import HELD
from vault.storage.sql.dialect import Dialect
from vault.storage.sql.reads import SqlReads
from vault.storage.sql.tx import Tx, Writes, run

__all__ = ["RetentionSql", "record_purge"]


def record_purge(d: Dialect, tenant: str, kind: int, purged: int, now: float) -> Tx[None]:
    """Add a purge's rows to the (tenant, kind) tally."""
    yield run(
        d.sql(
            "INSERT INTO retention_purges (tenant, kind, purged, last_purge_at) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (tenant, kind) DO UPDATE SET "
            "purged = retention_purges.purged + excluded.purged, "
            "last_purge_at = excluded.last_purge_at"
        ),
        tenant,
        kind,
        purged,
        now,
    )


def _set_policy(d: Dialect, tenant: str, kind: int, max_age: float, now: float) -> Tx[None]:
    yield run(
        d.sql(
            "INSERT INTO retention_policies (tenant, kind, max_age, set_at) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (tenant, kind) DO UPDATE SET "
            "max_age = excluded.max_age, set_at = excluded.set_at"
        ),
        tenant,
        kind,
        max_age,
        now,
    )


def _clear_policy(d: Dialect, tenant: str, kind: int) -> Tx[bool]:
    count = yield run(
        d.sql("DELETE FROM retention_policies WHERE tenant = ? AND kind = ?"), tenant, kind
    )
    return bool(count > 0)


class RetentionSql(SqlReads, Writes):
    """Retention policies, the age boundary and the counts of the Store protocol."""

    async def set_retention_policy(
        self, tenant: str, kind: int, max_age: float, now: float
    ) -> None:
        d = self._dialect
        await self._write(lambda: _set_policy(d, tenant, kind, max_age, now), retry_unique=True)

    async def clear_retention_policy(self, tenant: str, kind: int) -> bool:
        return await self._write(lambda: _clear_policy(self._dialect, tenant, kind))

    async def _age_boundary(self, created_before: float) -> int:
        """The last row id created before ``created_before``, by binary search over the
        id: rows are inserted in time order, so created_at grows with id and old rows
        are an id prefix. A row whose clock ran behind its neighbours' may fall past
        the boundary; it is found by a later run, once the boundary has moved past it."""
        first = await self._read("SELECT min(id), max(id) FROM tokens")
        lo, hi = (int(first[0][0] or 0), int(first[0][1] or 0)) if first else (0, 0)
        if not hi:
            return 0
        oldest = await self._read("SELECT created_at FROM tokens WHERE id = ?", lo)
        if not oldest or oldest[0][0] >= created_before:
            return 0
        while lo < hi:
            mid = (lo + hi + 1) // 2
            row = await self._read(
                "SELECT id, created_at FROM tokens WHERE id >= ? ORDER BY id LIMIT 1", mid
            )
            if row and row[0][1] < created_before:
                lo = int(row[0][0])
            else:
                hi = mid - 1
        return lo

    async def retention_counts(
        self, tenant: str, kind: int, created_before: float
    ) -> RetentionCounts:
        rows = await self._read(
            f"SELECT ({HELD}) AS held, count(*) FROM tokens "  # noqa: S608 - constant
            "WHERE id <= ? AND tenant = ? AND kind = ? AND created_at < ? GROUP BY 1",
            await self._age_boundary(created_before),
            tenant,
            kind,
            created_before,
        )
        return retention_counts(rows)
