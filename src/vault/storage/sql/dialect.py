"""What truly differs between the SQL dialects the stores speak."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

__all__ = ["POSTGRES", "SQLITE", "Dialect"]

_MARK = re.compile(r"\?")


@dataclass(frozen=True, slots=True)
class Dialect:
    """Placeholder style and the few statement forms that differ by dialect."""

    name: str  # the migrations folder, too
    numbered: bool  # $1, $2 … (PostgreSQL) rather than ? (SQLite)

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


@functools.lru_cache(maxsize=256)
def _numbered(text: str) -> str:
    count = iter(range(1, text.count("?") + 1))
    return _MARK.sub(lambda _: f"${next(count)}", text)


SQLITE = Dialect("sqlite", numbered=False)
POSTGRES = Dialect("postgres", numbered=True)
