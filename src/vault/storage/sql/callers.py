"""Caller writes, written once (``CallerWrites`` is mixed into both stores)."""

from __future__ import annotations

from vault.storage.base import CallerRow
from vault.storage.sql.codecs import caller_exists, caller_params
from vault.storage.sql.columns import CALLER_COLUMNS
from vault.storage.sql.dialect import Dialect
from vault.storage.sql.tx import Tx, UniqueViolation, Writes, guarded, run

__all__ = ["CallerWrites"]


def _add_caller(d: Dialect, caller: CallerRow) -> Tx[None]:
    try:
        yield guarded(run(d.insert("callers", CALLER_COLUMNS), *caller_params(caller)))
    except UniqueViolation:
        raise caller_exists() from None


def _revoke_caller(d: Dialect, name: str, revoked_at: float) -> Tx[bool]:
    count = yield run(
        d.sql("UPDATE callers SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL"),
        revoked_at,
        name,
    )
    return bool(count > 0)


class CallerWrites(Writes):
    """The caller writes of the Store protocol."""

    async def add_caller(self, caller: CallerRow) -> None:
        await self._write(lambda: _add_caller(self._dialect, caller))

    async def revoke_caller(self, name: str, revoked_at: float) -> bool:
        return await self._write(lambda: _revoke_caller(self._dialect, name, revoked_at))
