"""Write transactions written once, run by either store: generators of statements.

A write is a generator (``Tx``) that yields the statements it wants run and is sent
each one's result; its return value is the write's result. It does no I/O itself, so
the same rules run on SQLite's writer thread (driven synchronously, inside the group
commit) and on a pooled asyncpg connection (driven with awaits, in a transaction of
its own); each store's driver is a dozen lines. The SQL is written with ``?`` and put
through the store's ``Dialect``.

    def revoke(d: Dialect, name: str, at: float) -> Tx[bool]:
        count = yield run(d.sql("UPDATE callers SET revoked_at = ? WHERE name = ?"), at, name)
        return count > 0
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias, TypeVar

from vault.storage.sql.dialect import Dialect

__all__ = [
    "Abort",
    "Mode",
    "Stmt",
    "Tx",
    "UniqueViolation",
    "Writes",
    "guarded",
    "many",
    "rows",
    "run",
]

T = TypeVar("T")


class Mode(enum.Enum):
    ROWS = "rows"  # the result is the list of rows
    COUNT = "count"  # the result is the number of rows changed
    MANY = "many"  # executemany over a list of parameter tuples; the result is None


@dataclass(frozen=True, slots=True)
class Stmt:
    """One statement a transaction asks its driver to run."""

    sql: str
    params: Sequence[Any]
    mode: Mode
    # A unique violation undoes only this statement (a savepoint) and is raised into
    # the transaction as UniqueViolation; unguarded, it fails the whole transaction
    # (which PostgreSQL then runs again: a concurrent writer won a race).
    guarded: bool = False


Tx: TypeAlias = Generator[Stmt, Any, T]


class UniqueViolation(Exception):  # noqa: N818 - named after the SQL condition
    """A guarded statement broke a unique constraint (the driver's own error, translated)."""


class Abort(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Roll the transaction back and answer ``value``: raised by a transaction that
    must leave nothing behind (e.g. add_next_key_version lost the race for its number)."""

    def __init__(self, value: Any) -> None:
        super().__init__()
        self.value = value


def rows(sql: str, *params: Any) -> Stmt:
    return Stmt(sql, params, Mode.ROWS)


def run(sql: str, *params: Any) -> Stmt:
    return Stmt(sql, params, Mode.COUNT)


def many(sql: str, params: Sequence[Sequence[Any]]) -> Stmt:
    return Stmt(sql, params, Mode.MANY)


def guarded(stmt: Stmt) -> Stmt:
    return Stmt(stmt.sql, stmt.params, stmt.mode, guarded=True)


class Writes:
    """What the per-aggregate write mixins (sql/tokens.py, keys.py, …) need of a store."""

    _dialect: Dialect

    def _submit(self, op: Any) -> None:
        """Queue an op for the next group commit (raises when the store is not open)."""
        raise NotImplementedError

    async def _write(self, tx: Callable[[], Tx[T]], *, retry_unique: bool = False) -> T:
        """Run the transaction ``tx()`` makes, durably, and answer its result.
        ``retry_unique``: a unique violation means a concurrent writer won a race, and
        a fresh run resolves it (PostgreSQL runs ``tx()`` again; SQLite has one writer)."""
        raise NotImplementedError
