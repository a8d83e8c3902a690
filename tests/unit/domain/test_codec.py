"""The record codec: a sealed record opens; a record whose AAD parts (tenant, kind,
format, token, key version) or ciphertext are changed does not; the subject layer needs
the subject's key; the rewrap re-seal opens under the new primary."""

from __future__ import annotations

import dataclasses

import pytest

from vault.crypto.subject import SubjectKey, new_subject_key
from vault.domain.codec import RecordCodec, decode_payload, encode_payload, reseal
from vault.domain.model import DataKind, TokenFormat
from vault.domain.rotation import rotate
from vault.errors import DecryptionError, InternalError, NotFoundError
from vault.storage.base import TokenRecord

TOKEN = "tok_" + "a" * 32
REF = b"\x07" * 32


def _record(codec: RecordCodec, payload: bytes, skey: SubjectKey | None = None) -> TokenRecord:
    sealed = codec.seal("acme", int(DataKind.EMAIL), int(TokenFormat.RANDOM), TOKEN, payload, skey)
    return TokenRecord(
        token=TOKEN,
        tenant="acme",
        kind=int(DataKind.EMAIL),
        token_format=int(TokenFormat.RANDOM),
        key_version=sealed.key_version,
        ciphertext=sealed.ciphertext,
        fingerprint=b"f" * 32,
        deterministic=False,
        subject_ref=REF if skey is not None else None,
        request_id=None,
        request_hash=None,
        created_at=0.0,
        expires_at=None,
    )


def test_payload_round_trips_and_a_malformed_one_is_one_error():
    data = encode_payload(b"jo@example.com", "cust-1", {"source": "web"})
    assert decode_payload(data) == (b"jo@example.com", "cust-1", {"source": "web"})
    assert decode_payload(encode_payload(b"v", "", {})) == (b"v", "", {})
    for bad in (b"", b"\x09" + data[1:], data[:3]):
        with pytest.raises(InternalError, match="malformed"):
            decode_payload(bad)


async def test_a_sealed_record_opens(env):
    codec = RecordCodec(env.keys, env.subject_keys)
    row = _record(codec, encode_payload(b"jo@example.com", "", {"a": "b"}))
    opened = codec.open(row, {})
    assert (opened.kind, opened.value, opened.subject, opened.metadata) == (
        DataKind.EMAIL,
        "jo@example.com",
        "",
        {"a": "b"},
    )


@pytest.mark.parametrize(
    "change",
    [
        {"tenant": "globex"},
        {"kind": int(DataKind.TEXT)},
        {"token_format": int(TokenFormat.PAN_LAST4)},
        {"token": "tok_" + "b" * 32},
    ],
)
async def test_a_record_with_a_changed_aad_does_not_open(env, change):
    codec = RecordCodec(env.keys, env.subject_keys)
    row = _record(codec, encode_payload(b"jo@example.com", "", {}))
    with pytest.raises(DecryptionError):
        codec.open(dataclasses.replace(row, **change), {})


async def test_a_tampered_ciphertext_does_not_open(env):
    codec = RecordCodec(env.keys, env.subject_keys)
    row = _record(codec, encode_payload(b"jo@example.com", "", {}))
    flipped = row.ciphertext[:-1] + bytes((row.ciphertext[-1] ^ 1,))
    with pytest.raises(DecryptionError):
        codec.open(dataclasses.replace(row, ciphertext=flipped), {})


async def test_the_subject_layer_needs_the_subject_key(env):
    codec = RecordCodec(env.keys, env.subject_keys)
    skey = SubjectKey(new_subject_key())
    row = _record(codec, encode_payload(b"jo@example.com", "cust-1", {}), skey)
    assert codec.open(row, {REF: skey}).value == "jo@example.com"
    with pytest.raises(NotFoundError):  # destroyed: an erased subject
        codec.open(row, {REF: None})
    with pytest.raises(DecryptionError):  # another subject's key
        codec.open(row, {REF: SubjectKey(new_subject_key())})


async def test_reseal_moves_a_record_to_the_new_primary(env):
    codec = RecordCodec(env.keys, env.subject_keys)
    row = _record(codec, encode_payload(b"jo@example.com", "", {}))
    await rotate(env.store, env.kek, env.clock)
    await env.keys.load()
    keyring = env.keys.keyring
    primary = keyring.primary
    assert (row.key_version, primary.version) == (1, 2)
    moved = dataclasses.replace(
        row, key_version=primary.version, ciphertext=reseal(row, keyring, primary)
    )
    assert codec.open(moved, {}).value == "jo@example.com"
    with pytest.raises(DecryptionError):  # the old version's AAD no longer matches
        codec.open(dataclasses.replace(moved, key_version=1), {})
