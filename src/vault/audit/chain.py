"""The audit MAC encoding and the chaining of rows onto the sealed head (pure, no I/O).

A record's MAC is ``seal(previous mac, record_content(row))``; the first record chains
from AUDIT_GENESIS_MAC. The head ``(seq, mac)`` seals the newest record's MAC with
``head_content(seq)``; the genesis head (seq 0, written with the audit key) seals
AUDIT_GENESIS_MAC, so a store with an audit key and no head is broken, not empty.

The stores call ``check_head`` then ``chain_audits`` inside their write transaction:
they read the head and the newest row, and never encode a record themselves.
"""

from __future__ import annotations

import hmac
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from vault.storage.base import AUDIT_GENESIS_MAC, AuditHead, AuditRow, AuditSeal
from vault.storage.sql.codecs import detail_json, tokens_json

__all__ = [
    "AuditChain",
    "AuditChainBrokenError",
    "audit_content",
    "audit_detail_bytes",
    "audit_texts_bytes",
    "audit_tokens_bytes",
    "chain_audits",
    "check_head",
    "genesis_head",
    "head_content",
    "head_verifies",
    "record_content",
]

# Leading byte of an audit record's canonical bytes; a new layout gets a new number.
_AUDIT_FORMAT = 1
# Leading byte of the sealed head's content, so a head can never pass for a record.
_AUDIT_HEAD_FORMAT = 0x48
_U32 = struct.Struct(">I")
_HEAD = struct.Struct(">BQ")
_RECORD_START = struct.Struct(">BQd")


class AuditChainBrokenError(Exception):
    """The stored head does not seal the newest row: the writer refuses to append.

    The message names only what is wrong (no data), never a value or a MAC."""


def _field(out: list[bytes], text: str) -> None:
    data = text.encode("utf-8", "surrogatepass")
    out.append(_U32.pack(len(data)))
    out.append(data)


# The parts of record_content(), separately: the rows of one call share their texts
# and detail, so chain_audits encodes those once per call, not once per token.
def audit_texts_bytes(texts: tuple[str, ...]) -> bytes:
    out: list[bytes] = []
    for text in texts:
        _field(out, text)
    return b"".join(out)


def audit_tokens_bytes(tokens: tuple[str, ...]) -> bytes:
    out = [_U32.pack(len(tokens))]
    for token in tokens:
        _field(out, token)
    return b"".join(out)


def audit_detail_bytes(detail: tuple[tuple[str, str], ...]) -> bytes:
    out = [_U32.pack(len(detail))]
    for key, value in detail:
        _field(out, key)
        _field(out, value)
    return b"".join(out)


def audit_content(seq: int, time: float, texts: bytes, tokens: bytes, detail: bytes) -> bytes:
    return _RECORD_START.pack(_AUDIT_FORMAT, seq, time) + texts + tokens + detail


def record_content(row: AuditRow) -> bytes:
    """The canonical bytes the MAC covers: every stored field but the MAC, in a fixed
    order, each variable-length part length-prefixed, so no two rows encode alike."""
    return audit_content(
        row.seq,
        row.time,
        audit_texts_bytes(row.texts()),
        audit_tokens_bytes(row.tokens),
        audit_detail_bytes(row.detail),
    )


def head_content(seq: int) -> bytes:
    return _HEAD.pack(_AUDIT_HEAD_FORMAT, seq)


def genesis_head(seal: AuditSeal) -> AuditHead:
    """The head of an empty chain, written in the transaction that stores the audit key."""
    return AuditHead(0, seal(AUDIT_GENESIS_MAC, head_content(0)))


def head_verifies(head: AuditHead, last_mac: bytes, seal: AuditSeal) -> bool:
    """Does ``head`` seal the record whose MAC is ``last_mac`` (genesis: no record)?"""
    return hmac.compare_digest(seal(last_mac, head_content(head.seq)), head.mac)


def check_head(
    head: AuditHead | None, last: tuple[int, bytes] | None, seal: AuditSeal, *, keyed: bool
) -> tuple[int, bytes]:
    """The (seq, mac) to chain after, or AuditChainBrokenError when the head does not
    seal the newest row. ``last``: the newest row's (seq, mac); ``keyed``: the store
    holds an audit key (so its genesis head was written). Never repairs anything."""
    if head is None:
        if keyed:
            raise AuditChainBrokenError("the audit head is missing")
        if last is not None:
            raise AuditChainBrokenError("audit records without a head")
        return 0, AUDIT_GENESIS_MAC  # a bare store (no trail yet): the first append
    seq, mac = last if last is not None else (0, AUDIT_GENESIS_MAC)
    if head.seq != seq:
        raise AuditChainBrokenError("the audit head does not point at the newest record")
    if not head_verifies(head, mac, seal):
        raise AuditChainBrokenError("the audit head mac does not verify")
    return seq, mac


@dataclass(slots=True)
class AuditChain:
    """What one append writes: the rows as stored (per call), their parameters in
    AUDIT_COLUMNS order, and the sealed head."""

    stored: list[list[AuditRow]]  # per call, the rows with seq and mac set
    params: list[tuple[Any, ...]]  # one tuple per row, in AUDIT_COLUMNS order
    head_seq: int  # seq of the last row appended
    head_mac: bytes  # the last call's seal over (last mac, head_content(head_seq))


def chain_audits(
    seq: int, prev: bytes, calls: Sequence[tuple[Sequence[AuditRow], AuditSeal]]
) -> AuditChain:
    """Chain every call's rows, in order, after the record (seq, prev)."""
    texts_cache: dict[tuple[str, ...], bytes] = {}
    detail_cache: dict[tuple[tuple[str, str], ...], tuple[bytes, str]] = {}
    params: list[tuple[Any, ...]] = []
    stored: list[list[AuditRow]] = []
    seal: AuditSeal | None = None
    for rows, seal in calls:
        out = []
        for row in rows:
            seq += 1
            texts = row.texts()
            texts_b = texts_cache.get(texts)
            if texts_b is None:
                texts_b = texts_cache[texts] = audit_texts_bytes(texts)
            detail = detail_cache.get(row.detail)
            if detail is None:
                detail = detail_cache[row.detail] = (
                    audit_detail_bytes(row.detail),
                    detail_json(row.detail),
                )
            content = audit_content(
                seq, row.time, texts_b, audit_tokens_bytes(row.tokens), detail[0]
            )
            prev = seal(prev, content)
            sealed = AuditRow(
                seq, row.time, row.caller, row.tenant, row.action, row.tokens, row.purpose,
                row.outcome, row.reason, row.request_id, row.peer, row.detail, prev,
            )  # fmt: skip
            params.append(_params(sealed, detail[1]))
            out.append(sealed)
        stored.append(out)
    if seal is None:
        msg = "chain_audits needs at least one call"
        raise ValueError(msg)
    return AuditChain(stored, params, seq, seal(prev, head_content(seq)))


def _params(row: AuditRow, detail: str) -> tuple[Any, ...]:
    return (
        row.seq, row.time, row.caller, row.tenant, row.action, tokens_json(row.tokens),
        row.purpose, row.outcome, row.reason, row.request_id, row.peer, detail, row.mac,
    )  # fmt: skip
