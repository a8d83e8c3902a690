"""What truly differs between the SQL dialects the stores speak.

Statements are written once with ``?`` placeholders; ``Dialect.sql`` numbers them for
PostgreSQL. Lists of values are one array parameter on PostgreSQL (``= ANY``, ``unnest``:
one statement and one plan however many values) and chunks of placeholders on SQLite
(bounded host parameters per statement). SQLite has one writer (BEGIN IMMEDIATE), so
the row-locking reads PostgreSQL needs are skipped there (``row_locks``).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["POSTGRES", "SQLITE", "Dialect"]

_MARK = re.compile(r"\?")
# Most host parameters per statement we use (SQLite's limit is 32766).
_MAX_PARAMS = 900


@dataclass(frozen=True, slots=True)
class Dialect:
    """Placeholder style and the few statement forms that differ by dialect."""

    name: str  # the migrations folder, too
    numbered: bool  # $1, $2 … (PostgreSQL) rather than ? (SQLite)
    row_locks: bool  # FOR UPDATE / FOR KEY SHARE exist (PostgreSQL)

    def sql(self, text: str) -> str:
        """text written with ``?`` placeholders, in this dialect's (numbered once per
        distinct statement; the SQL text carries no literal question mark)."""
        return _numbered(text) if self.numbered else text

    def marks(self, count: int, start: int = 1) -> str:
        """count placeholders, comma-separated, numbered from start where numbered."""
        if self.numbered:
            return ",".join(f"${i}" for i in range(start, start + count))
        return ",".join("?" * count)

    def insert(self, table: str, columns: str) -> str:
        """An INSERT of one row of columns."""
        count = len(columns.split(","))
        return f"INSERT INTO {table} ({columns}) VALUES ({self.marks(count)})"  # noqa: S608 - constant names

    def upsert(self, table: str, columns: str, key: str) -> str:
        """An INSERT that replaces the row with the same key (both dialects spell it
        ``ON CONFLICT … DO UPDATE``; excluded names the row offered)."""
        sets = ", ".join(
            f"{c.strip()} = excluded.{c.strip()}" for c in columns.split(",") if c.strip() != key
        )
        return f"{self.insert(table, columns)} ON CONFLICT ({key}) DO UPDATE SET {sets}"

    def in_list(self, column: str, count: int, start: int = 1) -> str:
        """``column`` among count values: a list on SQLite, one array on PostgreSQL
        (a single $n parameter however many values, one plan)."""
        if self.numbered:
            return f"{column} = ANY(${start})"
        return f"{column} IN ({self.marks(count)})"

    def flag(self, column: str) -> str:
        """A boolean column is true (SQLite stores 1, and its partial index says so)."""
        return column if self.numbered else f"{column} = 1"

    def lock(self, clause: str) -> str:
        """A locking clause (`` FOR UPDATE``) where rows are locked, else nothing."""
        return f" {clause}" if self.row_locks else ""

    def any_of(
        self, column: str, values: Sequence[Any], cast: str, size: int = _MAX_PARAMS
    ) -> list[tuple[str, list[Any]]]:
        """``column`` among values, as (condition with ``?``, parameters) per statement:
        one array parameter on PostgreSQL, chunks of placeholders on SQLite."""
        if self.numbered:
            return [(f"{column} = ANY(?::{cast}[])", [list(values)])]
        return [
            (f"{column} IN ({','.join('?' * len(chunk))})", list(chunk))
            for chunk in _chunks(values, size)
        ]

    def tuple_in(
        self, columns: str, casts: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> list[tuple[str, list[Any]]]:
        """``(columns)`` among rows of values, as (condition, parameters) per statement:
        ``unnest`` of one array per column on PostgreSQL, ``VALUES`` lists on SQLite."""
        width = len(casts)
        if self.numbered:
            arrays = ", ".join(f"?::{cast}[]" for cast in casts)
            params = [[row[i] for row in rows] for i in range(width)]
            return [(f"({columns}) IN (SELECT * FROM unnest({arrays}))", params)]  # noqa: S608 - placeholders only
        one = "(" + ",".join("?" * width) + ")"
        return [
            (
                f"({columns}) IN (VALUES {','.join(one for _ in chunk)})",
                [p for row in chunk for p in row],
            )
            for chunk in _chunks(rows, _MAX_PARAMS // width)
        ]


def _chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


@functools.lru_cache(maxsize=256)
def _numbered(text: str) -> str:
    count = iter(range(1, text.count("?") + 1))
    return _MARK.sub(lambda _: f"${next(count)}", text)


SQLITE = Dialect("sqlite", numbered=False, row_locks=False)
POSTGRES = Dialect("postgres", numbered=True, row_locks=True)
