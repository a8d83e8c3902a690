"""Data subjects through a real server: export, erasure with crypto-shredding, legal hold.

A subject's values are encrypted under its own key (in subject-keys.db) inside the data
key's layer. The crypto-shredding test takes a copy of vault.db with SQLite's backup API
(what a backup job does) before the erasure and shows that, opened afterwards with the
live master key and the live subject-key store, the copy still has the ciphertext but
yields none of the values.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import grpc
import pytest
from api_helpers import (
    PURPOSE,
    assert_invalid,
    assert_reason,
    expect_code,
    revealed_value,
    tokenize_request,
)
from google.protobuf import duration_pb2
from subject_helpers import (
    ALICE,
    BOB,
    SUBJECTS,
    erase_request,
    hold_request,
    subject_stub,
    tokenize_subject,
    value_of,
    value_texts,
)

from vault.auth.policy import ALL_SCOPES
from vault.crypto.keyfile import KeyFileKek
from vault.domain.codec import RecordCodec
from vault.domain.keys import KeyMaterial
from vault.domain.retention import purge_retained, retention_stats
from vault.domain.subject_keys import SubjectKeys
from vault.errors import NotFoundError
from vault.storage.sqlite import SqliteStore
from vault.v1 import subject_service_pb2 as spb
from vault.v1 import token_service_pb2 as pb


def _export_value(rec: spb.SubjectRecord) -> object:
    if rec.WhichOneof("value") == "address":
        a = rec.address
        return {
            "recipient": a.recipient,
            "lines": list(a.lines),
            "locality": a.locality,
            "postal_code": a.postal_code,
            "region_code": a.region_code,
        }
    return rec.text


def _comparable(entry: dict) -> object:
    value = value_of(entry)
    if isinstance(value, dict):
        return {
            k: value[k] for k in ("recipient", "lines", "locality", "postal_code", "region_code")
        }
    return value


async def _reveal(vault, token, md=None):
    return await vault.stub.Detokenize(
        pb.DetokenizeRequest(token=token, purpose=PURPOSE), metadata=md or vault.md
    )


@pytest.fixture
async def people(vault):
    """Alice and Bob in tenant default, another Alice in tenant other, a value of nobody."""
    other_md = await vault.add_caller("other-app", ALL_SCOPES, tenant="other")
    return {
        "alice": await tokenize_subject(vault, SUBJECTS["alice"], ALICE),
        "bob": await tokenize_subject(vault, SUBJECTS["bob"], BOB),
        "other": await tokenize_subject(vault, SUBJECTS["other_tenant_alice"], ALICE, other_md),
        "nobody": await tokenize_subject(vault, SUBJECTS["no_subject"], ""),
        "other_md": other_md,
    }


# -- export ------------------------------------------------------------------------------


async def test_export_returns_exactly_the_subjects_values_and_reveals(vault, people):
    alice, bob = people["alice"], people["bob"]
    a_token = next(iter(alice))
    await _reveal(vault, a_token)
    await _reveal(vault, next(iter(bob)))  # Bob's reveal is not Alice's history
    resp = await subject_stub(vault).ExportSubject(
        spb.ExportSubjectRequest(subject=ALICE, purpose=PURPOSE), metadata=vault.md
    )
    got = {r.token: r for r in resp.records}
    assert set(got) == set(alice)
    for token, entry in alice.items():
        rec = got[token]
        assert rec.kind == pb.DetokenizeResponse(kind=f"DATA_KIND_{entry['kind']}").kind
        assert _export_value(rec) == _comparable(entry)
        assert dict(rec.metadata) == entry.get("metadata", {})
        assert rec.create_time.seconds == int(vault.clock.now())
    assert [(r.token, r.purpose, r.caller) for r in resp.reveals] == [(a_token, PURPOSE, "dev")]
    assert not resp.held


async def test_export_of_the_other_tenant_is_its_own(vault, people):
    resp = await subject_stub(vault).ExportSubject(
        spb.ExportSubjectRequest(subject=ALICE, purpose=PURPOSE), metadata=people["other_md"]
    )
    assert {r.token for r in resp.records} == set(people["other"])


@pytest.mark.parametrize("subject", ["cust-nobody", BOB.upper()])
async def test_export_of_an_unknown_subject_is_not_found(vault, people, subject):
    exc = await expect_code(
        subject_stub(vault).ExportSubject(
            spb.ExportSubjectRequest(subject=subject, purpose=PURPOSE), metadata=vault.md
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    assert_reason(exc, "SUBJECT_NOT_FOUND")


async def test_subject_requests_need_the_subjects_scope(vault, people):
    md = await vault.add_caller("app", ("tokenize", "detokenize"))
    stub = subject_stub(vault)
    for call in (
        stub.ExportSubject(spb.ExportSubjectRequest(subject=ALICE, purpose=PURPOSE), metadata=md),
        stub.EraseSubject(erase_request(ALICE), metadata=md),
        stub.SetLegalHold(hold_request(ALICE), metadata=md),
    ):
        await expect_code(call, grpc.StatusCode.PERMISSION_DENIED)
    await _reveal(vault, next(iter(people["alice"])))  # nothing was erased


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (spb.EraseSubjectRequest(subject="", reason="r"), "subject"),
        (spb.EraseSubjectRequest(subject=ALICE, reason=""), "reason"),
        (spb.EraseSubjectRequest(subject=ALICE + "\n", reason="r"), "subject"),
        (spb.EraseSubjectRequest(subject="x" * 257, reason="r"), "subject"),
    ],
)
async def test_erase_refuses_bad_input(vault, people, request_, field):
    exc = await expect_code(
        subject_stub(vault).EraseSubject(request_, metadata=vault.md),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert_invalid(exc, field)
    await _reveal(vault, next(iter(people["alice"])))


# -- erasure -----------------------------------------------------------------------------


def _backup(db: Path, dest: Path) -> Path:
    """A consistent copy of a live SQLite file, as a backup job takes it."""
    with sqlite3.connect(db) as src, sqlite3.connect(dest) as out:
        src.backup(out)
    src.close()
    out.close()
    return dest


async def _open_copy(vault, copy: Path):
    """A record codec over the copy, with the LIVE master key and LIVE subject-key store."""
    store = SqliteStore(copy)
    await store.open()
    kek = KeyFileKek.load(vault.server.config.master_key_path)
    keys = KeyMaterial(store, kek, vault.clock)
    await keys.load()
    subject_keys = await SubjectKeys.open(
        store, vault.server.subject_key_store, kek, vault.clock, recheck_seconds=0
    )
    return store, RecordCodec(keys, subject_keys)


async def _values_in_copy(vault, copy: Path, tokens) -> dict[str, object]:
    """What the copy yields for the tokens (a token absent or unreadable is missing)."""
    store, copy_vault = await _open_copy(vault, copy)
    try:
        rows = [r for r in await store.get_tokens(list(tokens)) if r is not None]
        keys = await copy_vault.subject_keys_for(rows)
        out = {}
        for row in rows:
            with contextlib.suppress(NotFoundError):
                out[row.token] = copy_vault.open(row, keys).value
        return out
    finally:
        await store.close()


def _scan(paths: list[Path], needles: list[str]) -> list[str]:
    found = []
    for path in paths:
        if path.exists():
            data = path.read_bytes()
            found += [f"{path.name}: {n!r}" for n in needles if n.encode() in data]
    return found


async def test_erase_removes_the_subject_and_shreds_old_copies(vault, people, tmp_path):
    alice, bob = people["alice"], people["bob"]
    cvc = await vault.stub.Tokenize(
        tokenize_request("CVC", "737", subject=ALICE), metadata=vault.md
    )
    backup = _backup(vault.db_path, tmp_path / "backup-before-erase.db")
    # Before the erasure the copy yields Alice's values: the copy is a usable backup.
    assert len(await _values_in_copy(vault, backup, alice)) == len(alice)

    resp = await subject_stub(vault).EraseSubject(erase_request(ALICE), metadata=vault.md)
    assert resp.erased_count == len(alice) + 1  # the CVC too

    # Every token of the subject answers NOT_FOUND; Bob's and the other tenant's stay.
    for token in [*alice, cvc.token]:
        await expect_code(_reveal(vault, token), grpc.StatusCode.NOT_FOUND)
        await expect_code(
            vault.stub.GetToken(pb.GetTokenRequest(token=token), metadata=vault.md),
            grpc.StatusCode.NOT_FOUND,
        )
    for token, entry in bob.items():
        assert revealed_value(await _reveal(vault, token)) == value_of(entry)
    other = next(iter(people["other"]))
    await _reveal(vault, other, people["other_md"])

    # Crypto-shredding: the old copy still has Alice's ciphertext, and no longer yields it.
    with sqlite3.connect(backup) as conn:
        marks = ",".join("?" * len(alice))
        ((n,),) = conn.execute(f"SELECT count(*) FROM tokens WHERE token IN ({marks})", list(alice))  # noqa: S608
    conn.close()
    assert n == len(alice)
    assert await _values_in_copy(vault, backup, alice) == {}
    assert len(await _values_in_copy(vault, backup, bob)) == len(bob)

    # The live store files hold none of the values (they never held plaintext either).
    data_dir = vault.server.config.data_dir
    files = [
        data_dir / name
        for name in (
            "vault.db",
            "vault.db-wal",
            "vault.db-shm",
            "subject-keys.db",
            "subject-keys.db-wal",
        )
    ]
    needles = [t for entry in SUBJECTS["alice"] for t in value_texts(entry)] + [ALICE]
    assert _scan(files, needles) == []

    # The trail keeps the fact (who, how many, why), never the values or the subject id.
    trail = vault.server.audit
    assert (await trail.verify()).intact
    rows = vault.sql("SELECT caller, detail, purpose FROM audit_log WHERE action = 'subject.erase'")
    assert len(rows) == 1
    caller, detail, purpose = rows[0]
    assert caller == "dev"
    assert purpose == "GDPR art. 17 request #1"
    assert f'["erased_count","{len(alice) + 1}"]' in detail
    assert ALICE not in str(vault.sql("SELECT * FROM audit_log"))


async def test_erasing_twice_is_not_found(vault, people):
    stub = subject_stub(vault)
    await stub.EraseSubject(erase_request(ALICE), metadata=vault.md)
    exc = await expect_code(
        stub.EraseSubject(erase_request(ALICE), metadata=vault.md), grpc.StatusCode.NOT_FOUND
    )
    assert_reason(exc, "SUBJECT_NOT_FOUND")
    await expect_code(
        stub.ExportSubject(
            spb.ExportSubjectRequest(subject=ALICE, purpose=PURPOSE), metadata=vault.md
        ),
        grpc.StatusCode.NOT_FOUND,
    )


async def test_a_new_value_after_erasure_gets_a_new_key(vault, people):
    await subject_stub(vault).EraseSubject(erase_request(ALICE), metadata=vault.md)
    again = await tokenize_subject(vault, SUBJECTS["alice"][:1], ALICE)
    (token,) = again
    assert revealed_value(await _reveal(vault, token)) == value_of(SUBJECTS["alice"][0])


# -- legal hold --------------------------------------------------------------------------


async def test_hold_blocks_erase_until_released(vault, people):
    stub = subject_stub(vault)
    held = await stub.SetLegalHold(hold_request(ALICE), metadata=vault.md)
    assert (held.held, held.changed) == (True, True)
    again = await stub.SetLegalHold(hold_request(ALICE), metadata=vault.md)
    assert (again.held, again.changed) == (True, False)
    exc = await expect_code(
        stub.EraseSubject(erase_request(ALICE), metadata=vault.md),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert_reason(exc, "LEGAL_HOLD")
    for token in people["alice"]:
        await _reveal(vault, token)  # nothing erased
    export = await stub.ExportSubject(
        spb.ExportSubjectRequest(subject=ALICE, purpose=PURPOSE), metadata=vault.md
    )
    assert export.held
    await stub.SetLegalHold(hold_request(ALICE, hold=False), metadata=vault.md)
    resp = await stub.EraseSubject(erase_request(ALICE), metadata=vault.md)
    assert resp.erased_count == len(people["alice"])
    actions = [
        r[0]
        for r in vault.sql(
            "SELECT action || ':' || outcome FROM audit_log "
            "WHERE action LIKE 'subject.%' ORDER BY seq"
        )
    ]
    assert actions == [
        "subject.hold:ok",
        "subject.hold:ok",
        "subject.erase:denied",
        "subject.export:ok",
        "subject.release:ok",
        "subject.erase:ok",
    ]


async def test_a_held_subject_does_not_expire(vault):
    ttl = duration_pb2.Duration(seconds=60)
    held = await tokenize_subject(vault, SUBJECTS["alice"][:2], ALICE, ttl=ttl)
    free = await tokenize_subject(vault, SUBJECTS["bob"][:1], BOB, ttl=ttl)
    await subject_stub(vault).SetLegalHold(hold_request(ALICE), metadata=vault.md)
    vault.clock.advance(120)
    await vault.server.vault.purge_expired()
    for token in held:
        await _reveal(vault, token)  # past its TTL, still there while held
    for token in free:
        await expect_code(_reveal(vault, token), grpc.StatusCode.NOT_FOUND)
    assert vault.count_tokens() == len(held)
    await subject_stub(vault).SetLegalHold(hold_request(ALICE, hold=False), metadata=vault.md)
    for token in held:
        await expect_code(_reveal(vault, token), grpc.StatusCode.NOT_FOUND)
    await vault.server.vault.purge_expired()
    assert vault.count_tokens() == 0


async def test_hold_errors(vault, people):
    stub = subject_stub(vault)
    exc = await expect_code(
        stub.SetLegalHold(hold_request("cust-unknown"), metadata=vault.md),
        grpc.StatusCode.NOT_FOUND,
    )
    assert_reason(exc, "SUBJECT_NOT_FOUND")
    exc = await expect_code(
        stub.SetLegalHold(hold_request(ALICE, hold=False), metadata=vault.md),
        grpc.StatusCode.NOT_FOUND,
    )
    assert_reason(exc, "HOLD_NOT_FOUND")
    exc = await expect_code(
        stub.SetLegalHold(hold_request(ALICE, reason=" "), metadata=vault.md),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert_invalid(exc, "reason", "REASON_REQUIRED")


async def test_hold_blocks_retention_and_release_unblocks(vault, people):
    """The servers' retention job (its body, run here on the server's clock) purges values
    past the tenant's maximum age for their kind, except a held subject's."""
    await vault.server.store.set_retention_policy("default", 8, 86400.0, vault.clock.now())
    await subject_stub(vault).SetLegalHold(hold_request(ALICE), metadata=vault.md)
    alice_email = next(t for t, e in people["alice"].items() if e["kind"] == "EMAIL")
    bob_email = next(t for t, e in people["bob"].items() if e["kind"] == "EMAIL")
    other_email = next(iter(people["other"]))
    vault.clock.advance(2 * 86400)
    await purge_retained(vault.server.store, vault.clock, vault.server.audit)
    await expect_code(_reveal(vault, bob_email), grpc.StatusCode.NOT_FOUND)
    await _reveal(vault, alice_email)  # held
    await _reveal(vault, other_email, people["other_md"])  # no policy in that tenant
    await _reveal(vault, next(iter(people["alice"])))  # a PAN: no policy for the kind
    (stats,) = await retention_stats(vault.server.store, vault.clock.now())
    assert (stats.due, stats.held, stats.purged) == (0, 1, 1)
    await subject_stub(vault).SetLegalHold(hold_request(ALICE, hold=False), metadata=vault.md)
    await purge_retained(vault.server.store, vault.clock, vault.server.audit)
    await expect_code(_reveal(vault, alice_email), grpc.StatusCode.NOT_FOUND)
    purges = vault.sql(
        "SELECT caller, tenant, detail FROM audit_log WHERE action = 'retention.purge'"
    )
    assert [(c, t) for c, t, _ in purges] == [("vault:retention", "default")] * 2
    assert all('["kind","EMAIL"]' in d for _, _, d in purges)


async def test_deterministic_tokens_are_per_subject_and_fingerprints_per_tenant(vault):
    """A subject's deterministic token is its own (erasing it leaves others' tokens), while
    the fingerprint a caller sees is the tenant-wide one."""
    pan = "4111111111111111"
    a = await vault.stub.Tokenize(
        tokenize_request("PAN", pan, deterministic=True, subject=ALICE), metadata=vault.md
    )
    a2 = await vault.stub.Tokenize(
        tokenize_request("PAN", pan, deterministic=True, subject=ALICE), metadata=vault.md
    )
    b = await vault.stub.Tokenize(
        tokenize_request("PAN", pan, deterministic=True, subject=BOB), metadata=vault.md
    )
    n = await vault.stub.Tokenize(
        tokenize_request("PAN", pan, deterministic=True), metadata=vault.md
    )
    assert (a2.token, a2.created) == (a.token, False)
    assert len({a.token, b.token, n.token}) == 3
    assert a.fingerprint == b.fingerprint == n.fingerprint == a2.fingerprint
    info = await vault.stub.GetToken(pb.GetTokenRequest(token=a.token), metadata=vault.md)
    assert info.fingerprint == a.fingerprint
    # What the rows store differs: a subject's is bound to its key.
    stored = dict(vault.sql("SELECT token, fingerprint FROM tokens"))
    assert len({stored[a.token], stored[b.token], stored[n.token]}) == 3
    await subject_stub(vault).EraseSubject(erase_request(ALICE), metadata=vault.md)
    assert (await _reveal(vault, b.token)).text == pan
    assert (await _reveal(vault, n.token)).text == pan


async def test_export_obeys_the_callers_reveal_kinds(vault, people):
    """An export reveals values: a subjects caller that may reveal only emails gets none of
    a subject who also has a card or an address on file."""
    md = await vault.add_caller("dpo-email-only", ("subjects",), reveal_kinds=("EMAIL",))
    exc = await expect_code(
        subject_stub(vault).ExportSubject(
            spb.ExportSubjectRequest(subject=ALICE, purpose=PURPOSE), metadata=md
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    assert_reason(exc, "KIND_NOT_ALLOWED")
    assert "@" not in (exc.details() or "")
    every_kind = await vault.add_caller("dpo", ("subjects",))
    resp = await subject_stub(vault).ExportSubject(
        spb.ExportSubjectRequest(subject=ALICE, purpose=PURPOSE), metadata=every_kind
    )
    assert {r.token for r in resp.records} == set(people["alice"])


async def test_export_spends_the_callers_reveal_rate(vault, people):
    alice = people["alice"]
    md = await vault.add_caller(
        "dpo-limited", ("subjects",), reveal_rate=0.001, reveal_burst=len(alice)
    )
    first = await subject_stub(vault).ExportSubject(
        spb.ExportSubjectRequest(subject=ALICE, purpose=PURPOSE), metadata=md
    )
    assert len(first.records) == len(alice)
    exc = await expect_code(
        subject_stub(vault).ExportSubject(
            spb.ExportSubjectRequest(subject=ALICE, purpose=PURPOSE), metadata=md
        ),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    )
    assert_reason(exc, "REVEAL_RATE_EXCEEDED")
