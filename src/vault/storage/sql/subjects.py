"""Data-subject writes, written once: legal holds and erasure (``SubjectWrites`` is
mixed into both stores).

Holds against erasure and purges, on PostgreSQL: set_subject_hold locks the subject's
rows FOR KEY SHARE; whoever deletes them locks them FOR UPDATE first and reads the
holds in a later statement (READ COMMITTED: it sees every hold committed before its
lock). On SQLite the one writer excludes every other, so the locking reads are skipped.
"""

from __future__ import annotations

from vault.storage.base import EraseOutcome
from vault.storage.sql.dialect import Dialect
from vault.storage.sql.tx import Tx, Writes, rows, run

__all__ = ["SubjectWrites"]

_ROWS_OF = "SELECT id FROM tokens WHERE tenant = ? AND subject_ref = ? ORDER BY id"


def _erase_subject(d: Dialect, tenant: str, subject_ref: bytes) -> Tx[EraseOutcome]:
    if d.row_locks:
        # The rows first: a hold being set waits for this transaction, or this waits
        # for the hold's and then sees it below.
        yield rows(d.sql(_ROWS_OF + " FOR UPDATE"), tenant, subject_ref)
    held = yield rows(
        d.sql("SELECT 1 FROM subject_holds WHERE tenant = ? AND subject_ref = ?"),
        tenant,
        subject_ref,
    )
    if held:
        return EraseOutcome(held=True, erased=0)
    # SQLite: secure_delete is on, the rows' bytes are overwritten, not left in free
    # pages. PostgreSQL has no secure_delete: the dead rows stay in their pages until
    # VACUUM reuses them (README, PostgreSQL); the subject key is what shreds.
    erased = yield run(
        d.sql("DELETE FROM tokens WHERE tenant = ? AND subject_ref = ?"), tenant, subject_ref
    )
    return EraseOutcome(held=False, erased=int(erased))


def _set_subject_hold(
    d: Dialect, tenant: str, subject_ref: bytes, reason: str, now: float
) -> Tx[bool]:
    count = yield run(
        d.sql(
            "INSERT INTO subject_holds (tenant, subject_ref, reason, held_at) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (tenant, subject_ref) DO NOTHING"
        ),
        tenant,
        subject_ref,
        reason,
        now,
    )
    if d.row_locks:
        # Until commit: an erasure or purge that locked a row first commits first; one
        # that comes later waits, then sees the hold.
        yield rows(d.sql(_ROWS_OF + " FOR KEY SHARE"), tenant, subject_ref)
    return bool(count > 0)


def _release_subject_hold(d: Dialect, tenant: str, subject_ref: bytes) -> Tx[bool]:
    count = yield run(
        d.sql("DELETE FROM subject_holds WHERE tenant = ? AND subject_ref = ?"),
        tenant,
        subject_ref,
    )
    return bool(count > 0)


class SubjectWrites(Writes):
    """The data-subject writes of the Store protocol."""

    async def erase_subject(self, tenant: str, subject_ref: bytes) -> EraseOutcome:
        return await self._write(lambda: _erase_subject(self._dialect, tenant, subject_ref))

    async def set_subject_hold(
        self, tenant: str, subject_ref: bytes, reason: str, now: float
    ) -> bool:
        d = self._dialect
        return await self._write(
            lambda: _set_subject_hold(d, tenant, subject_ref, reason, now), retry_unique=True
        )

    async def release_subject_hold(self, tenant: str, subject_ref: bytes) -> bool:
        d = self._dialect
        return await self._write(lambda: _release_subject_hold(d, tenant, subject_ref))
