"""check_head: the writer's test of the stored head before it appends (pure)."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from vault.audit.chain import (
    AuditChainBrokenError,
    chain_audits,
    check_head,
    genesis_head,
    head_content,
)
from vault.storage.base import AUDIT_GENESIS_MAC, AuditHead, AuditRow

KEY = b"k" * 32


def seal(prev: bytes, content: bytes) -> bytes:
    return hmac.new(KEY, prev + content, hashlib.sha256).digest()


def other_seal(prev: bytes, content: bytes) -> bytes:
    return hmac.new(b"o" * 32, prev + content, hashlib.sha256).digest()


ROW = AuditRow(0, 1.0, "c", "t", "token.reveal", ("tok",), "p", "ok", "", "r", "", (), b"")


def test_the_genesis_head_lets_the_first_record_chain_from_genesis() -> None:
    head = genesis_head(seal)
    assert head == AuditHead(0, seal(AUDIT_GENESIS_MAC, head_content(0)))
    assert check_head(head, None, seal, keyed=True) == (0, AUDIT_GENESIS_MAC)


def test_a_sealed_head_on_the_newest_row_is_accepted() -> None:
    chain = chain_audits(0, AUDIT_GENESIS_MAC, [([ROW, ROW], seal)])
    head = AuditHead(chain.head_seq, chain.head_mac)
    last = (2, chain.stored[0][1].mac)
    assert check_head(head, last, seal, keyed=True) == last


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("no head, keyed", "missing"),
        ("rows without a head", "without a head"),
        ("head past the rows", "newest record"),
        ("head behind the rows", "newest record"),
        ("all rows gone", "newest record"),
        ("head mac", "does not verify"),
        ("other key", "does not verify"),
    ],
)
def test_a_broken_head_is_refused_never_repaired(case: str, message: str) -> None:
    chain = chain_audits(0, AUDIT_GENESIS_MAC, [([ROW, ROW], seal)])
    head = AuditHead(chain.head_seq, chain.head_mac)
    last = (2, chain.stored[0][1].mac)
    use_seal, keyed = seal, True
    if case == "no head, keyed":
        head, last = None, None  # type: ignore[assignment]
    elif case == "rows without a head":
        head, keyed = None, False  # type: ignore[assignment]
    elif case == "head past the rows":
        last = (1, chain.stored[0][0].mac)
    elif case == "head behind the rows":
        last = (3, b"x" * 32)
    elif case == "all rows gone":
        last = None  # type: ignore[assignment]
    elif case == "head mac":
        head = AuditHead(2, b"\0" * 32)
    else:
        use_seal = other_seal
    with pytest.raises(AuditChainBrokenError, match=message):
        check_head(head, last, use_seal, keyed=keyed)


def test_a_bare_store_without_an_audit_key_starts_from_genesis() -> None:
    assert check_head(None, None, seal, keyed=False) == (0, AUDIT_GENESIS_MAC)
