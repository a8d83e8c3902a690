"""The reveal index: which audit records name a token, for the reveal history.

A reveal writes one chained record per call naming every token it revealed
(``token.reveal``, all outcomes). ``audit_tokens`` holds one row (tenant, token, seq) per
distinct token of such a record, written in the same transaction as the record (the
append calls ``index_stmt`` once after inserting the chain), so the reveal history of a
token is an index lookup instead of a scan of the trail. The index is not part of the
chain (no MAC covers it): it is derived from the records, append-only like them
(migration 0013's triggers), and ``vaultctl audit verify`` checks that it agrees with
them (``index_disagreement``), so a row removed behind the store's back, which would
hide a reveal from a subject export, is reported as tampering.

Only ``token.reveal`` records are indexed: the reveal history is the one question asked
per token, and tokenize / delete appends stay as cheap as they are.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from vault.storage.base import AuditRow, AuditSeal
from vault.storage.sql.batch import AuditOp
from vault.storage.sql.codecs import audit_from_row
from vault.storage.sql.columns import AUDIT_COLUMNS
from vault.storage.sql.dialect import Dialect
from vault.storage.sql.reads import SqlReads
from vault.storage.sql.tx import Stmt, Writes, many, rows

__all__ = [
    "INDEXED_ACTION",
    "AuditSql",
    "IndexProblem",
    "history_stmts",
    "index_disagreement",
    "index_rows",
    "index_stmt",
]

# The action whose records are indexed (vault.audit.base.ACTION_REVEAL; not imported:
# the storage layer knows actions only as text).
INDEXED_ACTION = "token.reveal"
# A refusal names a string that is not a random-format token this way (never indexed).
_NOT_RECORDED = "[not recorded]"
_PAGE = 1000


def index_rows(stored: Iterable[Iterable[AuditRow]]) -> list[tuple[str, str, int]]:
    """(tenant, token, seq) of every distinct token of the indexed records appended."""
    out: list[tuple[str, str, int]] = []
    for call in stored:
        for row in call:
            if row.action != INDEXED_ACTION:
                continue
            out.extend(
                (row.tenant, token, row.seq)
                for token in dict.fromkeys(row.tokens)
                if token != _NOT_RECORDED
            )
    return out


def index_stmt(d: Dialect, stored: Iterable[Iterable[AuditRow]]) -> Stmt | None:
    """The one statement that indexes an append's records (None when none is indexed)."""
    params = index_rows(stored)
    if not params:
        return None
    return many(d.sql("INSERT INTO audit_tokens (tenant, token, seq) VALUES (?, ?, ?)"), params)


def history_stmts(
    d: Dialect, columns: str, tenant: str, action: str, tokens: Sequence[str]
) -> list[Stmt]:
    """The queries of the records (``columns`` of audit_log) of ``action`` in ``tenant``
    naming any of ``tokens``: an index lookup, the records by seq (per query)."""
    return [
        rows(
            d.sql(
                f"SELECT {columns} FROM audit_log WHERE seq IN (SELECT seq FROM audit_tokens "  # noqa: S608 - constant
                f"WHERE tenant = ? AND {cond}) AND action = ? ORDER BY seq"
            ),
            tenant,
            *params,
            action,
        )
        for cond, params in d.any_of("token", list(dict.fromkeys(tokens)), "text")
    ]


@dataclass(frozen=True, slots=True)
class IndexProblem:
    """Where the index and the records disagree (the lowest seq concerned)."""

    seq: int
    problem: str

    def __str__(self) -> str:
        return f"audit token index disagrees with record {self.seq}: {self.problem}"


class _IndexedStore(Protocol):
    async def audit_records(self, after_seq: int, limit: int) -> list[AuditRow]: ...

    async def audit_index_rows(
        self, first_seq: int, last_seq: int
    ) -> list[tuple[str, str, int]]: ...


async def index_disagreement(store: _IndexedStore) -> IndexProblem | None:
    """The first place where audit_tokens is not exactly the index of the records (a row
    missing, one too many, or one naming a record past the last), or None."""
    after = 0
    while True:
        page = await store.audit_records(after, _PAGE)
        last = page[-1].seq if page else None
        found = set(await store.audit_index_rows(after + 1, last if last is not None else 2**62))
        wanted = set(index_rows([page]))
        if found != wanted:
            missing, extra = wanted - found, found - wanted
            seq = min(r[2] for r in (missing | extra))
            what = (
                "an index row is missing"
                if seq in {r[2] for r in missing}
                else ("an index row names a token the record does not")
            )
            return IndexProblem(seq, what)
        if last is None:
            return None
        after = last


class AuditSql(SqlReads, Writes):
    """The audit append and the reveal-history reads of the Store protocol, for both
    stores: an append is queued for the group commit (each store chains it its own way,
    in its writer's transaction); the reads go through the store's read path."""

    async def append_audit(self, rows: Sequence[AuditRow], seal: AuditSeal) -> list[AuditRow]:
        if not rows:
            return []
        future: asyncio.Future[list[AuditRow]] = asyncio.get_running_loop().create_future()
        self._submit(AuditOp(rows, seal, future))
        return await future

    async def audit_records_for_tokens(
        self, tenant: str, action: str, tokens: Sequence[str]
    ) -> list[AuditRow]:
        if action != INDEXED_ACTION:
            msg = f"only {INDEXED_ACTION} records are indexed by token"
            raise ValueError(msg)
        if not tokens:
            return []
        found: dict[int, AuditRow] = {}
        for stmt in history_stmts(self._dialect, AUDIT_COLUMNS, tenant, action, tokens):
            for row in await self._rows(stmt.sql, *stmt.params):
                found[int(row[0])] = audit_from_row(row)
        return [found[seq] for seq in sorted(found)]

    async def audit_index_rows(self, first_seq: int, last_seq: int) -> list[tuple[str, str, int]]:
        found = await self._read(
            "SELECT tenant, token, seq FROM audit_tokens WHERE seq BETWEEN ? AND ?",
            first_seq,
            last_seq,
        )
        return [(str(r[0]), str(r[1]), int(r[2])) for r in found]
