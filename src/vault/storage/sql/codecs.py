"""Row codecs: store rows to and from the parameter tuples of every dialect.

Positional, in the column lists' order (``columns``): the read path builds one record
per row, so no per-row name lookup. Both drivers hand back ``bytes`` for BLOB/bytea.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any, Protocol, TypeVar

from vault.errors import AlreadyExistsError
from vault.storage.base import AuditRow, CallerRow, RetentionCounts, TokenRecord

__all__ = [
    "Row",
    "audit_from_row",
    "caller_exists",
    "caller_from_row",
    "caller_params",
    "chunks",
    "detail_json",
    "json_pairs",
    "json_strings",
    "retention_counts",
    "token_from_row",
    "token_params",
    "tokens_json",
]

T = TypeVar("T")


class Row(Protocol):
    """A fetched row of either driver: sqlite3 tuples and asyncpg records alike."""

    def __getitem__(self, index: int, /) -> Any: ...


_PLAIN_TOKEN = re.compile(r"[A-Za-z0-9_]*")


def chunks(items: Sequence[T], size: int) -> list[Sequence[T]]:
    """items in slices of at most size (bounded parameters per statement)."""
    return [items[i : i + size] for i in range(0, len(items), size)]


def token_from_row(row: Row, at: int = 0) -> TokenRecord:
    """A token record from a row holding TOKEN_COLUMNS from position at."""
    return TokenRecord(
        row[at],
        row[at + 1],
        row[at + 2],
        row[at + 3],
        row[at + 4],
        row[at + 5],
        row[at + 6],
        bool(row[at + 7]),
        row[at + 8],
        row[at + 9],
        row[at + 10],
        row[at + 11],
        row[at + 12],
    )


def token_params(r: TokenRecord) -> tuple[Any, ...]:
    """The parameters of one token row, in TOKEN_COLUMNS order (deterministic as a bool:
    PostgreSQL's boolean column takes it, SQLite stores it as 1 or 0)."""
    return (
        r.token,
        r.tenant,
        r.kind,
        r.token_format,
        r.key_version,
        r.ciphertext,
        r.fingerprint,
        r.deterministic,
        r.subject_ref,
        r.request_id,
        r.request_hash,
        r.created_at,
        r.expires_at,
    )


def caller_from_row(row: Row) -> CallerRow:
    """A caller from a row holding CALLER_COLUMNS (scope lists stored comma-joined)."""
    return CallerRow(
        name=row[0],
        tenant=row[1],
        scopes=tuple(s for s in row[2].split(",") if s),
        key_id=row[3],
        key_hash=None if row[4] is None else bytes(row[4]),
        created_at=row[5],
        expires_at=row[6],
        revoked_at=row[7],
        cert_identity=row[8],
        reveal_kinds=tuple(k for k in row[9].split(",") if k),
        reveal_rate=float(row[10]),
        reveal_burst=int(row[11]),
        tokenize_rate=None if row[12] is None else float(row[12]),
        tokenize_burst=None if row[13] is None else int(row[13]),
    )


def caller_params(caller: CallerRow) -> tuple[Any, ...]:
    """The parameters of one caller row, in CALLER_COLUMNS order."""
    return (
        caller.name,
        caller.tenant,
        ",".join(caller.scopes),
        caller.key_id,
        caller.key_hash,
        caller.created_at,
        caller.expires_at,
        caller.revoked_at,
        caller.cert_identity,
        ",".join(caller.reveal_kinds),
        caller.reveal_rate,
        caller.reveal_burst,
        caller.tokenize_rate,
        caller.tokenize_burst,
    )


def caller_exists() -> AlreadyExistsError:
    """The refusal of a caller whose name or certificate identity is taken."""
    return AlreadyExistsError(
        "a caller with that name or certificate identity already exists",
        reason="CALLER_EXISTS",
    )


def tokens_json(tokens: tuple[str, ...]) -> str:
    """An audit row's tokens as a JSON array.

    Tokens are [a-z2-7_] or digits: written without json.dumps (2 us a row) when no
    character needs escaping; anything else goes through it.
    """
    if all(_PLAIN_TOKEN.fullmatch(t) for t in tokens):
        return '["' + '","'.join(tokens) + '"]' if tokens else "[]"
    return json.dumps(list(tokens), separators=(",", ":"))


def detail_json(detail: tuple[tuple[str, str], ...]) -> str:
    """An audit row's detail pairs as a JSON array of pairs."""
    return json.dumps([list(kv) for kv in detail], separators=(",", ":"))


def json_strings(text: Any) -> tuple[str, ...]:
    """A JSON array of strings; a row edited behind the store's back may hold anything,
    and reads it as such (the MAC check then names the row)."""
    try:
        items = json.loads(text)
    except (TypeError, ValueError):
        return (str(text),)
    if not isinstance(items, list):
        return (str(text),)
    return tuple(str(item) for item in items)


def json_pairs(text: Any) -> tuple[tuple[str, str], ...]:
    """A JSON array of pairs, read as leniently as json_strings."""
    try:
        items = json.loads(text)
        return tuple((str(k), str(v)) for k, v in items)
    except (TypeError, ValueError):
        return (("", str(text)),)


def audit_from_row(row: Row) -> AuditRow:
    """An audit record from a row holding AUDIT_COLUMNS."""
    return AuditRow(
        seq=row[0],
        time=row[1],
        caller=row[2],
        tenant=row[3],
        action=row[4],
        tokens=json_strings(row[5]),
        purpose=row[6],
        outcome=row[7],
        reason=row[8],
        request_id=row[9],
        peer=row[10],
        detail=json_pairs(row[11]),
        mac=bytes(row[12]) if isinstance(row[12], bytes | memoryview) else str(row[12]).encode(),
    )


def retention_counts(rows: Sequence[Row]) -> RetentionCounts:
    """Due and held counts from (held, count) rows grouped by hold."""
    by_held = {bool(r[0]): int(r[1]) for r in rows}
    return RetentionCounts(by_held.get(False, 0), by_held.get(True, 0))
