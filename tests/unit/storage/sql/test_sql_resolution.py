"""Insert resolution: the rules every store applies to a group commit."""

from __future__ import annotations

import dataclasses

from vault.storage.base import InsertStatus, TokenRecord
from vault.storage.sql.resolution import InsertResolver


def rec(token: str, **fields: object) -> TokenRecord:
    values: dict[str, object] = {
        "token": token,
        "tenant": "shop",
        "kind": 1,
        "token_format": 1,
        "key_version": 1,
        "ciphertext": b"c",
        "fingerprint": b"fp-" + token.encode(),
        "deterministic": False,
        "subject_ref": None,
        "request_id": None,
        "request_hash": None,
        "created_at": 1.0,
        "expires_at": None,
    }
    values.update(fields)
    return TokenRecord(**values)  # type: ignore[arg-type]


def test_fresh_records_are_inserted() -> None:
    resolver = InsertResolver([])
    outcomes = resolver.resolve([rec("a"), rec("b")])
    assert [o.status for o in outcomes] == [InsertStatus.INSERTED] * 2
    assert [r.token for r in resolver.to_insert] == ["a", "b"]


def test_taken_token_aborts_the_whole_call() -> None:
    resolver = InsertResolver([rec("a")])
    outcomes = resolver.resolve([rec("b"), rec("a")])
    assert [o.status for o in outcomes] == [InsertStatus.ABORTED, InsertStatus.TOKEN_TAKEN]
    assert resolver.to_insert == []


def test_same_token_twice_in_one_call_is_taken() -> None:
    resolver = InsertResolver([])
    outcomes = resolver.resolve([rec("a"), rec("a", fingerprint=b"other")])
    assert outcomes[1].status is InsertStatus.TOKEN_TAKEN
    assert outcomes[0].status is InsertStatus.ABORTED


def test_deterministic_hit_returns_the_stored_row_and_keeps_the_request_id() -> None:
    stored = rec("old", deterministic=True, fingerprint=b"same")
    resolver = InsertResolver([stored])
    new = rec("new", deterministic=True, fingerprint=b"same", request_id="r1", request_hash=b"h")
    (outcome,) = resolver.resolve([new])
    assert outcome.status is InsertStatus.DETERMINISTIC_EXISTS
    assert outcome.existing is stored
    assert resolver.to_insert == []
    assert resolver.reservations == [("shop", "r1", b"h", "old")]


def test_deterministic_within_one_batch_across_calls() -> None:
    resolver = InsertResolver([])
    first = rec("a", deterministic=True, fingerprint=b"same")
    resolver.resolve([first])
    (outcome,) = resolver.resolve([rec("b", deterministic=True, fingerprint=b"same")])
    assert outcome.status is InsertStatus.DETERMINISTIC_EXISTS
    assert outcome.existing is first


def test_request_id_replayed_with_same_hash_exists_with_other_hash_is_reused() -> None:
    stored = rec("a", request_id="r1", request_hash=b"h1")
    resolver = InsertResolver([stored])
    (same,) = resolver.resolve([rec("b", request_id="r1", request_hash=b"h1")])
    assert same.status is InsertStatus.REQUEST_EXISTS
    assert same.existing is stored
    outcomes = resolver.resolve([rec("c"), rec("d", request_id="r1", request_hash=b"h2")])
    assert [o.status for o in outcomes] == [InsertStatus.ABORTED, InsertStatus.REQUEST_REUSED]
    assert outcomes[1].existing is stored
    assert resolver.to_insert == []


def test_reused_request_id_of_an_unwritten_row_is_reported_without_it() -> None:
    resolver = InsertResolver([])
    outcomes = resolver.resolve(
        [
            rec("a", request_id="r1", request_hash=b"h1"),
            rec("b", request_id="r1", request_hash=b"h2"),
        ]
    )
    assert outcomes[0].status is InsertStatus.ABORTED
    assert outcomes[1].status is InsertStatus.REQUEST_REUSED
    assert outcomes[1].existing is None


def test_other_tenant_does_not_match() -> None:
    stored = rec("a", deterministic=True, fingerprint=b"same")
    resolver = InsertResolver([stored])
    other = dataclasses.replace(stored, token="b", tenant="other")
    (outcome,) = resolver.resolve([other])
    assert outcome.status is InsertStatus.INSERTED
