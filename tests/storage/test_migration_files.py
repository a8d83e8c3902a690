"""The shipped migration files themselves: every stored column says what it holds (a
`--` comment on its line), in both dialects, and the PostgreSQL files define the same
tables and columns as the SQLite ones (the store copy compares them one to one)."""

from __future__ import annotations

import re

import pytest

from vault.storage.sqlite import migrations

# Lines of a CREATE TABLE body that continue a column or constrain the table.
_NOT_A_COLUMN = re.compile(
    r"\s*(--|CHECK|REFERENCES|PRIMARY|UNIQUE|FOREIGN|CONSTRAINT|\))", re.IGNORECASE
)
_CREATE = re.compile(r"CREATE TABLE (\w+) \(")
_ADD_COLUMN = re.compile(r"ALTER TABLE (\w+) ADD COLUMN (\w+)", re.IGNORECASE)


def _columns(dialect: str) -> dict[str, dict[str, str]]:
    """table -> column -> its line, over every migration of the dialect, in order."""
    tables: dict[str, dict[str, str]] = {}
    for _, script in migrations(dialect):
        table = None
        for line in script.splitlines():
            if table is None:
                if created := _CREATE.match(line.strip()):
                    table = created.group(1)
                    tables[table] = {}
                elif added := _ADD_COLUMN.match(line.strip()):
                    tables[added.group(1)][added.group(2)] = line
                continue
            if line.startswith(")"):
                table = None
            elif line.strip() and not _NOT_A_COLUMN.match(line):
                tables[table][line.split()[0]] = line
    return tables


@pytest.mark.parametrize("dialect", ["sqlite", "postgres"])
def test_every_stored_column_is_commented(dialect):
    columns = _columns(dialect)
    assert "tokens" in columns
    assert "kek_shares" in columns
    assert "rewrap_progress" in columns
    bare = [
        f"{t}.{c}" for t, cols in columns.items() for c, line in cols.items() if "--" not in line
    ]
    assert bare == []


def test_both_dialects_define_the_same_columns():
    sqlite, postgres = _columns("sqlite"), _columns("postgres")
    assert {t: sorted(c) for t, c in postgres.items()} == {t: sorted(c) for t, c in sqlite.items()}
