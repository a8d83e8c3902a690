"""Contract: the token index of the reveal records (audit_tokens, migration 0013) on
every backend: written with the record, answering the reveal history, checked by
verify."""

from __future__ import annotations

import contextlib
import sqlite3

import pytest

from vault.audit.base import ACTION_REVEAL
from vault.storage.base import AuditRow
from vault.storage.sql.audit_index import index_disagreement
from vault.storage.sql.schema import migrations
from vault.storage.sqlite import _split_statements

NOW = 1_800_000_000.0


def _seal(prev: bytes, content: bytes) -> bytes:
    return b"m" * 32


def _audit(tokens, tenant="tenant-a", action=ACTION_REVEAL, outcome="ok"):
    return AuditRow(0, NOW, "c", tenant, action, tuple(tokens), "p", outcome, "", "r", "", (), b"")


async def test_one_record_of_100_tokens_is_indexed_under_each(store):
    tokens = [f"tok_{i:03d}" for i in range(100)]
    [stored] = await store.append_audit([_audit(tokens)], _seal)
    assert stored.tokens == tuple(tokens)
    rows = await store.audit_index_rows(1, 1)
    assert sorted(rows) == sorted(("tenant-a", t, 1) for t in tokens)
    for token in (tokens[0], tokens[57], tokens[99]):
        [found] = await store.audit_records_for_tokens("tenant-a", ACTION_REVEAL, [token])
        assert (found.seq, found.tokens) == (1, tuple(tokens))
    assert await index_disagreement(store) is None


async def test_only_reveals_are_indexed_and_a_token_twice_once(store):
    await store.append_audit(
        [
            _audit(["tok_a", "tok_a"]),
            _audit(["tok_a"], action="token.delete"),
            _audit(["[not recorded]", "tok_b"], outcome="denied"),
            _audit(["tok_a"], tenant="tenant-b"),
        ],
        _seal,
    )
    assert sorted(await store.audit_index_rows(1, 10)) == [
        ("tenant-a", "tok_a", 1),
        ("tenant-a", "tok_b", 3),
        ("tenant-b", "tok_a", 4),
    ]
    found = await store.audit_records_for_tokens("tenant-a", ACTION_REVEAL, ["tok_a", "tok_b"])
    assert [r.seq for r in found] == [1, 3]
    with pytest.raises(ValueError, match="indexed"):
        await store.audit_records_for_tokens("tenant-a", "token.delete", ["tok_a"])
    assert await index_disagreement(store) is None


async def test_the_index_and_the_records_are_written_together(store):
    # Several calls grouped into one append: each record's tokens are indexed under its seq.
    first = await store.append_audit([_audit(["tok_1", "tok_2"])], _seal)
    second = await store.append_audit([_audit(["tok_2", "tok_3"]), _audit(["tok_4"])], _seal)
    assert [r.seq for r in first + second] == [1, 2, 3]
    found = await store.audit_records_for_tokens("tenant-a", ACTION_REVEAL, ["tok_2"])
    assert [r.seq for r in found] == [1, 2]
    assert sorted(await store.audit_index_rows(3, 3)) == [("tenant-a", "tok_4", 3)]


def test_migration_0013_indexes_the_reveal_records_written_before_it(tmp_path):
    # A trail of the one-record-per-token days: each reveal record is indexed under its
    # token; other actions, refusals' placeholders and rows that are not JSON are not.

    with contextlib.closing(sqlite3.connect(tmp_path / "old.db")) as conn:
        later = []
        for number, script in migrations("sqlite"):
            if number >= 13:
                later.append(script)
                continue
            for statement in _split_statements(script):
                conn.execute(statement)
        insert = (
            "INSERT INTO audit_log VALUES "
            "(?, 1.0, 'c', ?, ?, ?, 'p', 'ok', '', 'r', '', '[]', x'00')"
        )
        conn.executemany(
            insert,
            [
                (1, "t", "token.reveal", '["tok_a"]'),
                (2, "t", "token.reveal", '["tok_b"]'),
                (3, "t", "token.delete", '["tok_a"]'),
                (4, "t", "token.reveal", '["[not recorded]", "tok_a"]'),
                (5, "u", "token.reveal", "not json"),
            ],
        )
        for statement in _split_statements(later[0]):
            conn.execute(statement)
        rows = conn.execute("SELECT tenant, token, seq FROM audit_tokens ORDER BY seq").fetchall()
    assert rows == [("t", "tok_a", 1), ("t", "tok_b", 2), ("t", "tok_a", 4)]
