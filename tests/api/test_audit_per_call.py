"""Issue 14: one audit record per reveal call, naming every token it revealed, and the
reveal history of a token revealed in a batch (through the token index)."""

from __future__ import annotations

import json

from api_helpers import PURPOSE, tokenize_request
from subject_helpers import ALICE, SUBJECTS, subject_stub, tokenize_subject

from vault.v1 import subject_service_pb2 as spb
from vault.v1 import token_service_pb2 as pb


def _reveal_records(vault) -> list[tuple[int, list[str], dict[str, str]]]:
    rows = vault.sql(
        "SELECT seq, tokens, detail FROM audit_log WHERE action = 'token.reveal' ORDER BY seq"
    )
    return [(int(s), json.loads(t), dict(json.loads(d))) for s, t, d in rows]


async def _tokens(vault, n: int, kind: str = "TEXT") -> list[str]:
    out = []
    for i in range(n):
        resp = await vault.stub.Tokenize(tokenize_request(kind, f"note {i}"), metadata=vault.md)
        out.append(resp.token)
    return out


async def test_a_batch_of_100_reveals_is_one_record_naming_all_100(vault):
    tokens = await _tokens(vault, 100)
    resp = await vault.stub.BatchDetokenize(
        pb.BatchDetokenizeRequest(tokens=tokens, purpose=PURPOSE), metadata=vault.md
    )
    assert [r.text for r in resp.responses] == [f"note {i}" for i in range(100)]
    [(seq, named, detail)] = _reveal_records(vault)
    assert named == tokens  # every token, in the order revealed: nothing lost
    assert detail == {
        "batch_size": "100",
        "kind": "TEXT",
        "token_count": "100",
        "kinds": "TEXT:100",
    }
    indexed = vault.sql("SELECT token FROM audit_tokens WHERE seq = ? ORDER BY token", (seq,))
    assert [t for (t,) in indexed] == sorted(tokens)


async def test_audit_volume_grows_by_calls_not_tokens(vault):
    tokens = await _tokens(vault, 50)
    before = len(_reveal_records(vault))
    for start in range(0, 50, 10):
        await vault.stub.BatchDetokenize(
            pb.BatchDetokenizeRequest(tokens=tokens[start : start + 10], purpose=PURPOSE),
            metadata=vault.md,
        )
    records = _reveal_records(vault)
    assert len(records) - before == 5  # 5 calls of 10 tokens: 5 records, not 50
    assert sorted(t for _, named, _ in records for t in named) == sorted(tokens)


async def test_the_reveal_history_of_a_token_revealed_in_a_batch(vault):
    alice = list(await tokenize_subject(vault, SUBJECTS["alice"], ALICE))
    others = await _tokens(vault, 3)
    await vault.stub.BatchDetokenize(
        pb.BatchDetokenizeRequest(tokens=[others[0], alice[0], others[1]], purpose=PURPOSE),
        metadata=(*vault.md, ("x-request-id", "batch-7")),
    )
    first = await subject_stub(vault).ExportSubject(
        spb.ExportSubjectRequest(subject=ALICE, purpose=PURPOSE), metadata=vault.md
    )
    # The batch's record names three tokens; only Alice's is her history.
    assert [(r.token, r.request_id) for r in first.reveals] == [(alice[0], "batch-7")]
    # The export itself was one record naming every exported token: the next export
    # lists one reveal per token of it.
    second = await subject_stub(vault).ExportSubject(
        spb.ExportSubjectRequest(subject=ALICE, purpose=PURPOSE), metadata=vault.md
    )
    assert len(second.reveals) == 1 + len(alice)
    assert sorted(r.token for r in second.reveals[1:]) == sorted(alice)
    exports = [r for r in _reveal_records(vault) if r[2].get("method") == "ExportSubject"]
    assert len(exports) == 2
    assert all(sorted(named) == sorted(alice) for _, named, _ in exports)
