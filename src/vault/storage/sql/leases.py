"""Leases and the rewrap progress row, written once (``LeaseSql`` is mixed into both
stores). A lease is taken when free, expired or already the holder's, in one upsert
whose RETURNING says who holds it now: replicas racing for it get one winner.
"""

from __future__ import annotations

from typing import Any

from vault.storage.base import RewrapProgressRow
from vault.storage.sql.columns import P_PROGRESS_COLUMNS, PROGRESS_COLUMNS
from vault.storage.sql.dialect import Dialect
from vault.storage.sql.reads import SqlReads
from vault.storage.sql.tx import Tx, Writes, rows, run

__all__ = ["LeaseSql"]


def _take_lease(
    d: Dialect, table: str, key: str, keyval: Any, holder: str, now: float, expires_at: float
) -> Tx[bool]:
    # `table` and `key` are constants of ours.
    got = yield rows(
        d.sql(
            f"INSERT INTO {table} ({key}, holder, expires_at) VALUES (?, ?, ?) "  # noqa: S608
            f"ON CONFLICT ({key}) DO UPDATE SET holder = excluded.holder, "
            "expires_at = excluded.expires_at "
            f"WHERE {table}.holder = excluded.holder OR {table}.expires_at <= ? "
            "RETURNING holder"
        ),
        keyval,
        holder,
        expires_at,
        now,
    )
    return bool(got) and got[0][0] == holder


def _release(d: Dialect, sql: str, *params: Any) -> Tx[None]:
    yield run(d.sql(sql), *params)


def _put_progress(d: Dialect, p: RewrapProgressRow) -> Tx[None]:
    # One upsert: writers of several replicas replace the row, never duplicate it.
    yield run(
        d.upsert("rewrap_progress", f"id, {PROGRESS_COLUMNS}", "id"),
        1,
        p.holder,
        p.primary_version,
        p.batch_size,
        p.rate,
        p.started_at,
        p.last_batch_at,
        p.finished_at,
        p.batches,
        p.rewrapped,
        p.skipped,
        p.failed,
        p.remaining,
    )


def _optional(value: Any) -> float | None:
    return None if value is None else float(value)


class LeaseSql(SqlReads, Writes):
    """The rewrap and job leases and the rewrap progress of the Store protocol."""

    async def take_rewrap_lease(self, holder: str, now: float, expires_at: float) -> bool:
        d = self._dialect
        return await self._write(
            lambda: _take_lease(d, "rewrap_lease", "id", 1, holder, now, expires_at),
            retry_unique=True,
        )

    async def release_rewrap_lease(self, holder: str) -> None:
        sql = "DELETE FROM rewrap_lease WHERE id = 1 AND holder = ?"
        await self._write(lambda: _release(self._dialect, sql, holder))

    async def take_job_lease(self, job: str, holder: str, now: float, expires_at: float) -> bool:
        d = self._dialect
        return await self._write(
            lambda: _take_lease(d, "job_leases", "job", job, holder, now, expires_at),
            retry_unique=True,
        )

    async def release_job_lease(self, job: str, holder: str) -> None:
        sql = "DELETE FROM job_leases WHERE job = ? AND holder = ?"
        await self._write(lambda: _release(self._dialect, sql, job, holder))

    async def put_rewrap_progress(self, progress: RewrapProgressRow) -> None:
        await self._write(lambda: _put_progress(self._dialect, progress), retry_unique=True)

    async def rewrap_progress(self) -> RewrapProgressRow | None:
        # One statement: the progress and its run's lease come from one snapshot.
        found = await self._read(
            f"SELECT {P_PROGRESS_COLUMNS}, l.expires_at FROM rewrap_progress p "  # noqa: S608 - constant
            "LEFT JOIN rewrap_lease l ON l.id = 1 AND l.holder = p.holder WHERE p.id = 1"
        )
        if not found:
            return None
        r = found[0]
        return RewrapProgressRow(
            r[0],
            int(r[1]),
            int(r[2]),
            float(r[3]),
            float(r[4]),
            float(r[5]),
            _optional(r[6]),
            int(r[7]),
            int(r[8]),
            int(r[9]),
            int(r[10]),
            int(r[11]),
            _optional(r[12]),
        )
