"""The audit-chain computation: sealed rows, parameters and head, without I/O."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from vault.storage.base import AUDIT_GENESIS_MAC, AuditHead, AuditRow
from vault.storage.sql.audit_chain import chain_audits
from vault.storage.sql.codecs import audit_from_row

KEY = b"k" * 32


def seal(prev: bytes, content: bytes) -> bytes:
    return hmac.new(KEY, prev + content, hashlib.sha256).digest()


def row(action: str, tokens: tuple[str, ...] = ("tok_a",)) -> AuditRow:
    return AuditRow(
        0, 10.5, "checkout", "shop", action, tokens, "refund", "ok", "", "req", "peer",
        (("method", "Detokenize"),), b"",
    )  # fmt: skip


def test_rows_chain_from_genesis_and_head_seals_the_last() -> None:
    chain = chain_audits(0, AUDIT_GENESIS_MAC, [([row("a"), row("b")], seal), ([row("c")], seal)])
    flat = [r for call in chain.stored for r in call]
    assert [r.seq for r in flat] == [1, 2, 3]
    assert [len(call) for call in chain.stored] == [2, 1]
    prev = AUDIT_GENESIS_MAC
    for r in flat:
        assert r.mac == seal(prev, r.content())
        prev = r.mac
    assert chain.head_seq == 3
    assert chain.head_mac == seal(prev, AuditHead.content(3))


def test_continues_after_the_stored_head() -> None:
    first = chain_audits(0, AUDIT_GENESIS_MAC, [([row("a")], seal)])
    second = chain_audits(first.head_seq, first.stored[0][0].mac, [([row("b")], seal)])
    both = chain_audits(0, AUDIT_GENESIS_MAC, [([row("a"), row("b")], seal)])
    assert second.stored[0][0] == both.stored[0][1]


def test_params_round_trip_through_the_row_codec() -> None:
    chain = chain_audits(4, b"p" * 32, [([row("a", ("tok_x", "tok_y"))], seal)])
    (stored,) = chain.stored[0]
    assert audit_from_row(chain.params[0]) == stored
    assert chain.params[0][5] == '["tok_x","tok_y"]'


def test_no_calls_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one call"):
        chain_audits(0, AUDIT_GENESIS_MAC, [])
