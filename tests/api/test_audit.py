"""The audit trail as a client sees it: every reveal recorded before its value leaves,
refusals recorded, no value in the trail, and reveals refused when the trail is down."""

from __future__ import annotations

import json
import random
import string
import uuid

import grpc
from api_helpers import (
    PURPOSE,
    assert_reason,
    bearer,
    close_refusal_window,
    expect_code,
    tokenize_request,
)

from vault.audit.trail import AuditTrail
from vault.errors import StoreUnavailableError
from vault.v1 import token_service_pb2 as pb
from vault.wiring import DEV_ACTOR

PAN = "4111111111111111"
NOTE = "a private note 8812"
AUDIT_COLUMNS = (
    "seq, time, caller, tenant, action, tokens, purpose, outcome, reason, request_id, peer, detail"
)


def audit_rows(vault) -> list[dict]:
    # The dev caller's creation (serve --dev, caller.add) is set-up, not under test here.
    rows = vault.sql(
        f"SELECT {AUDIT_COLUMNS} FROM audit_log WHERE caller != ? ORDER BY seq",  # noqa: S608
        (DEV_ACTOR,),
    )
    names = [c.strip() for c in AUDIT_COLUMNS.split(",")]
    out = []
    for row in rows:
        rec = dict(zip(names, row, strict=True))
        rec["tokens"] = json.loads(rec["tokens"])
        rec["detail"] = dict(json.loads(rec["detail"]))
        out.append(rec)
    return out


def db_bytes(vault) -> bytes:
    data = b""
    for suffix in ("", "-wal"):
        path = vault.db_path.with_name(vault.db_path.name + suffix)
        if path.exists():
            data += path.read_bytes()
    return data


async def tokenize(vault, kind: str, value: str) -> str:
    resp = await vault.stub.Tokenize(tokenize_request(kind, value), metadata=vault.md)
    return resp.token


async def test_a_reveal_writes_one_record_with_who_why_and_where(vault):
    token = await tokenize(vault, "PAN", PAN)
    # Letters only: a random hex id holds a Luhn-valid 12-19 digit run about 1 time in
    # 200, and such an x-request-id is refused (CARD_NUMBER_IN_TEXT).
    request_id = "checkout-" + "".join(random.choices(string.ascii_lowercase, k=24))
    resp = await vault.stub.Detokenize(
        pb.DetokenizeRequest(token=token, purpose=PURPOSE),
        metadata=(*vault.md, ("x-request-id", request_id)),
    )
    assert resp.text == PAN

    [rec] = audit_rows(vault)
    assert rec["seq"] == 2  # the dev caller's creation (serve --dev) is seq 1
    assert rec["action"] == "token.reveal"
    assert rec["outcome"] == "ok"
    assert rec["reason"] == ""
    assert rec["caller"] == "dev"
    assert rec["tenant"] == "default"
    assert rec["tokens"] == [token]
    assert rec["purpose"] == PURPOSE
    assert rec["request_id"] == request_id
    assert rec["peer"].startswith(("ipv4:127.0.0.1:", "ipv6:"))
    assert rec["time"] == vault.clock.now()
    assert rec["detail"] == {"kind": "PAN"}


async def test_without_x_request_id_the_vault_makes_one_up(vault):
    token = await tokenize(vault, "EMAIL", "jane@example.com")
    for _ in range(2):
        await vault.stub.Detokenize(
            pb.DetokenizeRequest(token=token, purpose=PURPOSE), metadata=vault.md
        )
    ids = [rec["request_id"] for rec in audit_rows(vault)]
    assert len(set(ids)) == 2
    assert all(uuid.UUID(i).version == 4 for i in ids)


async def test_a_batch_of_n_writes_one_record_naming_the_n_tokens(vault):
    # Issue 14 decision: one record per call, listing its tokens in order (was one each).
    values = [f"{NOTE} #{i}" for i in range(7)]
    tokens = [await tokenize(vault, "TEXT", v) for v in values]
    resp = await vault.stub.BatchDetokenize(
        pb.BatchDetokenizeRequest(tokens=tokens, purpose=PURPOSE),
        metadata=(*vault.md, ("x-request-id", "batch-1")),
    )
    assert [r.text for r in resp.responses] == values

    records = audit_rows(vault)
    assert [r["tokens"] for r in records] == [tokens]
    assert {r["request_id"] for r in records} == {"batch-1"}
    assert all(
        r["detail"] == {"batch_size": "7", "kind": "TEXT", "token_count": "7", "kinds": "TEXT:7"}
        for r in records
    )
    assert [r["seq"] for r in records] == [2]  # seq 1: the dev caller


async def test_no_value_anywhere_in_the_trail(vault):
    token = await tokenize(vault, "PAN", PAN)
    note = await tokenize(vault, "TEXT", NOTE)
    await vault.stub.BatchDetokenize(
        pb.BatchDetokenizeRequest(tokens=[token, note], purpose=PURPOSE), metadata=vault.md
    )
    # A caller sending a card number where a token belongs: refused, and not recorded.
    await expect_code(
        vault.stub.Detokenize(pb.DetokenizeRequest(token=PAN, purpose=PURPOSE), metadata=vault.md),
        grpc.StatusCode.NOT_FOUND,
    )
    trail = json.dumps(audit_rows(vault))
    assert len(audit_rows(vault)) == 2  # the batch's one record and the refusal
    for secret in (PAN, PAN[-8:], NOTE, vault.key):
        assert secret not in trail
    # Nor anywhere in the database file (values are stored encrypted).
    data = db_bytes(vault)
    for secret in (PAN, NOTE, vault.key):
        assert secret.encode() not in data


async def test_refused_reveals_are_recorded(vault):
    token = await tokenize(vault, "TEXT", NOTE)
    missing = "tok_" + "b" * 32
    await expect_code(
        vault.stub.Detokenize(
            pb.DetokenizeRequest(token=missing, purpose=PURPOSE), metadata=vault.md
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    await expect_code(
        vault.stub.Detokenize(pb.DetokenizeRequest(token=token), metadata=vault.md),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    other = await vault.add_caller("other-shop", tenant="other")
    await expect_code(
        vault.stub.Detokenize(pb.DetokenizeRequest(token=token, purpose=PURPOSE), metadata=other),
        grpc.StatusCode.NOT_FOUND,
    )
    [not_found, no_purpose, other_tenant] = audit_rows(vault)
    assert (not_found["outcome"], not_found["reason"]) == ("denied", "TOKEN_NOT_FOUND")
    assert not_found["tokens"] == [missing]
    assert (no_purpose["outcome"], no_purpose["reason"]) == ("error", "PURPOSE_REQUIRED")
    assert other_tenant["caller"] == "other-shop"
    assert other_tenant["tenant"] == "other"
    assert (other_tenant["outcome"], other_tenant["reason"]) == ("denied", "TOKEN_NOT_FOUND")
    assert all(r["action"] == "token.reveal" for r in audit_rows(vault))


async def test_permission_denials_are_recorded_once_with_the_reason(vault):
    token = await tokenize(vault, "TEXT", NOTE)
    tokenizer = await vault.add_caller("tokenizer", ("tokenize",))
    await expect_code(
        vault.stub.Detokenize(
            pb.DetokenizeRequest(token=token, purpose=PURPOSE),
            metadata=(*tokenizer, ("x-request-id", "r-1")),
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    revealer = await vault.add_caller("revealer", ("detokenize",))
    await expect_code(
        vault.stub.Tokenize(tokenize_request("TEXT", "x"), metadata=revealer),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    [reveal, tok] = audit_rows(vault)
    assert reveal["caller"] == "tokenizer"
    assert (reveal["action"], reveal["outcome"], reveal["reason"]) == (
        "token.reveal",
        "denied",
        "MISSING_SCOPE",
    )
    assert reveal["tokens"] == [token]
    assert reveal["request_id"] == "r-1"
    assert tok["caller"] == "revealer"
    assert (tok["action"], tok["outcome"], tok["reason"]) == (
        "auth.authorize",
        "denied",
        "MISSING_SCOPE",
    )
    # One refusal: recorded at once, as an aggregated record of count 1.
    assert tok["detail"] == {"method": "Tokenize", "count": "1"}


async def test_authentication_failures_are_recorded_without_the_credential(vault):
    garbage = "vk_0123456789abcdef_" + "A" * 43
    for md in ((), bearer(garbage), (("authorization", "Basic dXNlcjpwYXNz"),)):
        await expect_code(
            vault.stub.Detokenize(
                pb.DetokenizeRequest(token="tok_" + "c" * 32, purpose=PURPOSE), metadata=md
            ),
            grpc.StatusCode.UNAUTHENTICATED,
        )
    # The first refusal of each (peer, reason, method) is recorded at once; the second
    # BAD_CREDENTIAL is counted and recorded when its window closes.
    records = await close_refusal_window(vault.clock, lambda: audit_rows(vault), 3)
    assert [(r["reason"], r["detail"]["count"]) for r in records] == [
        ("NO_CREDENTIAL", "1"),
        ("BAD_CREDENTIAL", "1"),
        ("BAD_CREDENTIAL", "1"),
    ]
    for r in records:
        assert (r["action"], r["outcome"], r["caller"]) == ("auth.authenticate", "denied", "")
        assert r["detail"]["method"] == "Detokenize"
        assert r["peer"]
    assert set(records[2]["detail"]) == {"method", "count", "first_seen", "last_seen"}
    trail = json.dumps(records)
    for secret in ("0123456789abcdef", "A" * 43, "dXNlcjpwYXNz"):
        assert secret not in trail


async def test_delete_is_recorded(vault):
    token = await tokenize(vault, "TEXT", NOTE)
    await vault.stub.DeleteToken(pb.DeleteTokenRequest(token=token), metadata=vault.md)
    await expect_code(
        vault.stub.DeleteToken(pb.DeleteTokenRequest(token=token), metadata=vault.md),
        grpc.StatusCode.NOT_FOUND,
    )
    [done, again] = audit_rows(vault)
    assert (done["action"], done["outcome"], done["tokens"]) == ("token.delete", "ok", [token])
    assert (again["outcome"], again["reason"]) == ("denied", "TOKEN_NOT_FOUND")


async def test_reveal_fails_closed_when_the_trail_cannot_be_written(vault, monkeypatch):
    token = await tokenize(vault, "PAN", PAN)

    async def unavailable(rows, seal):
        raise StoreUnavailableError("the store could not commit")

    monkeypatch.setattr(vault.server.store, "append_audit", unavailable)
    for call in (
        vault.stub.Detokenize(
            pb.DetokenizeRequest(token=token, purpose=PURPOSE), metadata=vault.md
        ),
        vault.stub.BatchDetokenize(
            pb.BatchDetokenizeRequest(tokens=[token], purpose=PURPOSE), metadata=vault.md
        ),
    ):
        exc = await expect_code(call, grpc.StatusCode.UNAVAILABLE)
        assert_reason(exc, "AUDIT_UNAVAILABLE")
        assert PAN not in (exc.details() or "")
        assert PAN.encode() not in b"".join(
            v for _, v in exc.trailing_metadata() or () if isinstance(v, bytes)
        )

    monkeypatch.undo()
    resp = await vault.stub.Detokenize(
        pb.DetokenizeRequest(token=token, purpose=PURPOSE), metadata=vault.md
    )
    assert resp.text == PAN
    assert len(audit_rows(vault)) == 1


async def test_the_trail_the_server_writes_verifies(vault):
    tokens = [await tokenize(vault, "TEXT", f"{NOTE} {i}") for i in range(5)]
    await vault.stub.BatchDetokenize(
        pb.BatchDetokenizeRequest(tokens=tokens, purpose=PURPOSE), metadata=vault.md
    )
    await expect_code(
        vault.stub.Detokenize(pb.DetokenizeRequest(token=tokens[0])),
        grpc.StatusCode.UNAUTHENTICATED,
    )
    trail = vault.server.audit
    assert isinstance(trail, AuditTrail)
    result = await trail.verify()
    assert result.intact
    # the dev caller's creation, the batch (one record naming 5 tokens) and the refusal
    assert result.records == 1 + 2


async def test_json_lines_sink_gets_each_committed_record(vault_factory, tmp_path):
    sink = tmp_path / "audit.jsonl"
    vault = await vault_factory(audit_sink=str(sink))
    token = await tokenize(vault, "TEXT", NOTE)
    await vault.stub.BatchDetokenize(
        pb.BatchDetokenizeRequest(tokens=[token, token], purpose=PURPOSE), metadata=vault.md
    )
    lines = [json.loads(line) for line in sink.read_text(encoding="utf-8").splitlines()]
    dev, *lines = lines  # the dev caller's creation comes first
    assert (dev["seq"], dev["action"], dev["caller"]) == (1, "caller.add", DEV_ACTOR)
    assert [rec["seq"] for rec in lines] == [2]  # one record per call, naming both
    assert all(rec["tokens"] == [token, token] and rec["purpose"] == PURPOSE for rec in lines)
    assert NOTE not in sink.read_text(encoding="utf-8")
    assert oct(sink.stat().st_mode & 0o777) == oct(0o600)


async def test_an_oversized_credential_is_unauthenticated_and_audited(vault):
    big = "vk_" + "a" * (20 * 1024)
    await expect_code(
        vault.stub.Detokenize(
            pb.DetokenizeRequest(token="tok_" + "c" * 32, purpose=PURPOSE), metadata=bearer(big)
        ),
        grpc.StatusCode.UNAUTHENTICATED,
    )
    [record] = audit_rows(vault)
    assert (record["action"], record["outcome"], record["reason"]) == (
        "auth.authenticate",
        "denied",
        "BAD_CREDENTIAL",
    )
    assert "a" * 64 not in json.dumps(record)
