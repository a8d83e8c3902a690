"""The audit-chain computation: rows sealed onto the previous MAC, and the new head.

Pure: the store reads the previous (seq, mac) under its lock, calls chain_audits, and
writes the parameters and the head it returns. The rows of one call share texts and
detail, so each distinct one is encoded once per batch, not once per row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from vault.storage.base import (
    AuditHead,
    AuditRow,
    AuditSeal,
    audit_content,
    audit_detail_bytes,
    audit_texts_bytes,
    audit_tokens_bytes,
)
from vault.storage.sql.codecs import detail_json, tokens_json

__all__ = ["AuditChain", "chain_audits"]


@dataclass(slots=True)
class AuditChain:
    """What one append writes: the rows as stored (per call), their parameters in
    AUDIT_COLUMNS order, and the sealed head."""

    stored: list[list[AuditRow]]  # per call, the rows with seq and mac set
    params: list[tuple[Any, ...]]  # one tuple per row, in AUDIT_COLUMNS order
    head_seq: int  # seq of the last row appended
    head_mac: bytes  # the last call's seal over (last mac, AuditHead.content(head_seq))


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
            tokens_b = audit_tokens_bytes(row.tokens)
            content = audit_content(seq, row.time, texts_b, tokens_b, detail[0])
            prev = seal(prev, content)
            sealed = AuditRow(
                seq,
                row.time,
                row.caller,
                row.tenant,
                row.action,
                row.tokens,
                row.purpose,
                row.outcome,
                row.reason,
                row.request_id,
                row.peer,
                row.detail,
                prev,
            )
            params.append(_params(sealed, detail[1]))
            out.append(sealed)
        stored.append(out)
    if seal is None:
        msg = "chain_audits needs at least one call"
        raise ValueError(msg)
    return AuditChain(stored, params, seq, seal(prev, AuditHead.content(seq)))


def _params(row: AuditRow, detail: str) -> tuple[Any, ...]:
    return (
        row.seq,
        row.time,
        row.caller,
        row.tenant,
        row.action,
        tokens_json(row.tokens),
        row.purpose,
        row.outcome,
        row.reason,
        row.request_id,
        row.peer,
        detail,
        row.mac,
    )
