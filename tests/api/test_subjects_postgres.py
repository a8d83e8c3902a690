"""Data subjects on a vault serving on PostgreSQL, with its subject keys in a second
PostgreSQL database: export, UpdateToken, legal hold and erasure through a real server;
and crypto-shredding against a real dump. A pg_dump of the main database taken before
the erasure (what a backup job keeps) is restored into a new database and opened with
the live master key and the live subject-key database: before the erasure it yields
the subject's values, afterwards none of them, while another subject's still open.
"""

from __future__ import annotations

import contextlib

import grpc
import pytest
from api_helpers import PURPOSE, assert_reason, expect_code, revealed_value
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

from vault.crypto.keyfile import KeyFileKek
from vault.domain.codec import RecordCodec
from vault.domain.keys import KeyMaterial
from vault.domain.subject_keys import SubjectKeys
from vault.errors import FailedPreconditionError, NotFoundError
from vault.storage.postgres import PostgresStore
from vault.v1 import subject_service_pb2 as spb
from vault.v1 import token_service_pb2 as pb


@pytest.fixture
async def pg_vault(vault_factory, pg_database, pg_subject_key_database):
    return await vault_factory(
        database_url=pg_database, subject_key_database_url=pg_subject_key_database
    )


async def _reveal(vault, token):
    return await vault.stub.Detokenize(
        pb.DetokenizeRequest(token=token, purpose=PURPOSE), metadata=vault.md
    )


def _same(revealed: object, entry: dict) -> bool:
    """The revealed value is the entry's (an address: the fields the entry gives)."""
    expected = value_of(entry)
    if isinstance(expected, dict) and isinstance(revealed, dict):
        return {k: revealed.get(k) for k in expected} == expected
    return revealed == expected


async def _values_in(vault, url: str, tokens) -> dict[str, object]:
    """What the database at ``url`` yields for the tokens, opened with the LIVE master
    key and the LIVE subject-key store (a token absent or unreadable is missing)."""
    store = PostgresStore(url)
    await store.open()
    try:
        kek = KeyFileKek.load(vault.server.config.master_key_path)
        keys = KeyMaterial(store, kek, vault.clock)
        await keys.load()
        subject_keys = await SubjectKeys.open(
            store, vault.server.subject_key_store, kek, vault.clock, recheck_seconds=0
        )
        copy_vault = RecordCodec(keys, subject_keys)
        rows = [r for r in await store.get_tokens(list(tokens)) if r is not None]
        skeys = await copy_vault.subject_keys_for(rows)
        out = {}
        for row in rows:
            with contextlib.suppress(NotFoundError):
                out[row.token] = copy_vault.open(row, skeys).value
        return out
    finally:
        await store.close()


async def test_subject_requests_and_crypto_shredding_on_postgres(
    pg_vault, pg_cluster, pg_database, pg_subject_key_database, tmp_path
):
    vault = pg_vault
    alice = await tokenize_subject(vault, SUBJECTS["alice"], ALICE)
    bob = await tokenize_subject(vault, SUBJECTS["bob"], BOB)
    stub = subject_stub(vault)

    # Export: exactly Alice's values.
    exported = await stub.ExportSubject(
        spb.ExportSubjectRequest(subject=ALICE, purpose=PURPOSE), metadata=vault.md
    )
    assert {r.token for r in exported.records} == set(alice)
    assert not exported.held

    # UpdateToken: a value corrected in place, the token kept.
    text_token = next(t for t, e in alice.items() if "text" in e and e["kind"] == "EMAIL")
    await vault.stub.UpdateToken(
        pb.UpdateTokenRequest(token=text_token, text="alice@corrected.example"), metadata=vault.md
    )
    assert revealed_value(await _reveal(vault, text_token)) == "alice@corrected.example"
    alice[text_token] = alice[text_token] | {"text": "alice@corrected.example"}

    # Legal hold: erasure refused, nothing removed; released, it goes through below.
    await stub.SetLegalHold(hold_request(ALICE), metadata=vault.md)
    exc = await expect_code(
        stub.EraseSubject(erase_request(ALICE), metadata=vault.md),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert_reason(exc, "LEGAL_HOLD")
    for token, entry in alice.items():
        assert _same(revealed_value(await _reveal(vault, token)), entry)
    await stub.SetLegalHold(hold_request(ALICE, hold=False), metadata=vault.md)

    # The backup: a dump of the main database, restored elsewhere. It holds the
    # ciphertext but no subject key (they are in the other database).
    dump = tmp_path / "vault-before-erase.sql"
    pg_cluster.dump(pg_database.rsplit("/", 1)[1], dump)
    assert "subject_keys" not in dump.read_text(encoding="utf-8")
    restored = pg_cluster.url(pg_cluster.restore(dump))
    assert len(await _values_in(vault, restored, alice)) == len(alice)

    resp = await stub.EraseSubject(erase_request(ALICE), metadata=vault.md)
    assert resp.erased_count == len(alice)
    for token in alice:
        await expect_code(_reveal(vault, token), grpc.StatusCode.NOT_FOUND)
    for token, entry in bob.items():
        assert _same(revealed_value(await _reveal(vault, token)), entry)

    # Crypto-shredding: the restored dump still has Alice's rows, and yields none of them.
    marks = ",".join(f"'{t}'" for t in alice)
    left = pg_cluster.psql(
        restored.rsplit("/", 1)[1],
        f"SELECT count(*) FROM tokens WHERE token IN ({marks})",  # noqa: S608 - our tokens
    )
    assert int(left) == len(alice)
    assert await _values_in(vault, restored, alice) == {}
    assert len(await _values_in(vault, restored, bob)) == len(bob)
    # Neither live database holds a value in the clear (they never held plaintext).
    needles = [t for entry in SUBJECTS["alice"] for t in value_texts(entry)]
    for url in (pg_database, pg_subject_key_database):
        name = url.rsplit("/", 1)[1]
        dumped = tmp_path / f"{name}.sql"
        pg_cluster.dump(name, dumped)
        text = dumped.read_text(encoding="utf-8")
        assert [n for n in needles if n in text] == []
    # And a second erasure finds nothing.
    await expect_code(
        stub.EraseSubject(erase_request(ALICE), metadata=vault.md), grpc.StatusCode.NOT_FOUND
    )


async def test_a_postgres_store_without_a_subject_key_database_is_refused(
    vault_factory, pg_database
):
    # Not a local subject-keys.db the other replicas could not see: a refusal at start.
    with pytest.raises(FailedPreconditionError, match="subject_key_database_url") as caught:
        await vault_factory(database_url=pg_database)
    assert caught.value.reason == "BAD_CONFIG"
    with pytest.raises(FailedPreconditionError, match="another database") as caught:
        await vault_factory(database_url=pg_database, subject_key_database_url=pg_database)
    assert caught.value.reason == "BAD_CONFIG"
