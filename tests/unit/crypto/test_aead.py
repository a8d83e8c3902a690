"""Record encryption: AES-256-GCM with a random nonce and the row bound in as AAD."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from vault.crypto import aead
from vault.crypto.aead import NONCE_BYTES, RecordKey, record_aad
from vault.errors import DecryptionError
from vault.secrets import SecretBytes

VECTORS = json.loads(
    (Path(__file__).parents[2] / "data" / "crypto" / "aesgcm_vectors.json").read_text(
        encoding="utf-8"
    )
)["vectors"]

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
TAG_BYTES = 16
ROW = {"tenant": "tenant-a", "kind": 1, "token_format": 2, "token": "tok_abc", "key_version": 3}


def vectors():
    return [pytest.param(v, id=v["id"]) for v in VECTORS]


def unhex(vector, field):
    return bytes.fromhex(vector[field])


@pytest.fixture
def key():
    return RecordKey(3, SecretBytes(KEY))


@pytest.fixture
def aad():
    return record_aad(**ROW)


# -- known answers -----------------------------------------------------------------


@pytest.mark.parametrize("vector", vectors())
def test_known_answer_decrypts(vector):
    key = RecordKey(1, SecretBytes(unhex(vector, "key")))
    blob = unhex(vector, "iv") + unhex(vector, "ct") + unhex(vector, "tag")
    assert key.decrypt(blob, unhex(vector, "aad")) == unhex(vector, "pt")


@pytest.mark.parametrize("vector", vectors())
def test_known_answer_encrypts_as_nonce_ciphertext_tag(vector, monkeypatch):
    nonce = unhex(vector, "iv")

    def fixed_urandom(n):
        assert n == NONCE_BYTES
        return nonce

    monkeypatch.setattr(aead, "random_bytes", fixed_urandom)
    key = RecordKey(1, SecretBytes(unhex(vector, "key")))
    blob = key.encrypt(unhex(vector, "pt"), unhex(vector, "aad"))
    assert blob == nonce + unhex(vector, "ct") + unhex(vector, "tag")


@pytest.mark.parametrize("vector", vectors())
def test_known_answer_with_a_flipped_tag_bit_fails(vector):
    key = RecordKey(1, SecretBytes(unhex(vector, "key")))
    tag = bytearray(unhex(vector, "tag"))
    tag[-1] ^= 0x01
    blob = unhex(vector, "iv") + unhex(vector, "ct") + bytes(tag)
    with pytest.raises(DecryptionError):
        key.decrypt(blob, unhex(vector, "aad"))


# -- round trip and layout ---------------------------------------------------------


@pytest.mark.parametrize("plaintext", [b"", b"4242424242424242", bytes(range(256)) * 40])
def test_round_trip(key, aad, plaintext):
    blob = key.encrypt(plaintext, aad)
    assert len(blob) == NONCE_BYTES + len(plaintext) + TAG_BYTES
    assert key.decrypt(blob, aad) == plaintext


def test_another_instance_of_the_same_key_decrypts(key, aad):
    blob = key.encrypt(b"4242424242424242", aad)
    assert RecordKey(3, SecretBytes(KEY)).decrypt(blob, aad) == b"4242424242424242"


def test_nonce_is_twelve_fresh_random_bytes(key, aad, monkeypatch):
    drawn = []
    real_urandom = aead.random_bytes

    def spy(n):
        value = real_urandom(n)
        drawn.append((n, value))
        return value

    monkeypatch.setattr(aead, "random_bytes", spy)
    first = key.encrypt(b"same value", aad)
    second = key.encrypt(b"same value", aad)

    assert [n for n, _ in drawn] == [NONCE_BYTES, NONCE_BYTES]
    assert first[:NONCE_BYTES] == drawn[0][1]
    assert second[:NONCE_BYTES] == drawn[1][1]
    assert first[:NONCE_BYTES] != second[:NONCE_BYTES]
    assert first != second


def test_ciphertext_does_not_contain_the_plaintext(key, aad):
    plaintext = b"4111111111111111 JOHN Q CARDHOLDER"
    blob = key.encrypt(plaintext, aad)
    assert plaintext not in blob
    assert b"4111111111111111" not in blob


# -- every failure is the same "decryption failed" ---------------------------------


def assert_decryption_fails(key, blob, aad):
    with pytest.raises(DecryptionError) as raised:
        key.decrypt(blob, aad)
    assert str(raised.value) == "decryption failed"
    # No chained cause that could carry detail (which check failed, which key).
    assert raised.value.__cause__ is None


def test_wrong_aad_fails(key, aad):
    blob = key.encrypt(b"value", aad)
    assert_decryption_fails(key, blob, b"")
    assert_decryption_fails(key, blob, aad + b"\x00")


@pytest.mark.parametrize(
    "change",
    [
        {"tenant": "tenant-b"},
        {"kind": 2},
        {"token_format": 3},
        {"token": "tok_abd"},
        {"key_version": 4},
    ],
    ids=["tenant", "kind", "token_format", "token", "key_version"],
)
def test_ciphertext_moved_to_another_row_fails(key, aad, change):
    blob = key.encrypt(b"value", aad)
    assert_decryption_fails(key, blob, record_aad(**{**ROW, **change}))


@pytest.mark.parametrize("position", [0, NONCE_BYTES - 1, NONCE_BYTES, NONCE_BYTES + 3, -1])
def test_flipped_byte_fails(key, aad, position):
    blob = bytearray(key.encrypt(b"a value of some length", aad))
    blob[position] ^= 0x80
    assert_decryption_fails(key, bytes(blob), aad)


@pytest.mark.parametrize("keep", [0, 1, NONCE_BYTES, NONCE_BYTES + TAG_BYTES - 1, -1])
def test_truncated_blob_fails(key, aad, keep):
    blob = key.encrypt(b"a value", aad)
    assert_decryption_fails(key, blob[:keep], aad)


def test_another_key_fails(key, aad):
    blob = key.encrypt(b"value", aad)
    assert_decryption_fails(RecordKey(3, SecretBytes(OTHER_KEY)), blob, aad)


def test_data_key_must_be_32_bytes():
    for size in (0, 16, 24, 31, 33):
        with pytest.raises(ValueError, match="32 bytes"):
            RecordKey(1, SecretBytes(b"k" * size))


def test_record_key_does_not_show_or_pickle_its_key(key):
    assert repr(key) == "RecordKey(version=3)"
    assert KEY.hex() not in repr(key)
    with pytest.raises(TypeError):
        pickle.dumps(key)


# -- the AAD encoding --------------------------------------------------------------


def test_aad_is_unambiguous_between_tenant_and_token():
    ab_c = record_aad("ab", 1, 1, "c", 1)
    a_bc = record_aad("a", 1, 1, "bc", 1)
    assert ab_c != a_bc


@pytest.mark.parametrize(
    ("left", "right"),
    [
        (("", 1, 1, "ab", 1), ("ab", 1, 1, "", 1)),
        (("t", 1, 2, "x", 1), ("t", 2, 1, "x", 1)),
        (("t", 1, 1, "x", 2), ("t", 2, 1, "x", 1)),
        (("t", 1, 1, "x", 256), ("t", 1, 2, "x", 0)),
        (("t\x00", 1, 1, "x", 1), ("t", 1, 1, "\x00x", 1)),
    ],
    ids=[
        "empty-tenant-vs-empty-token",
        "kind-vs-format",
        "kind-vs-version",
        "wide-version",
        "nul-bytes",
    ],
)
def test_aad_distinct_rows_give_distinct_aad(left, right):
    assert record_aad(*left) != record_aad(*right)


def test_aad_is_deterministic_and_starts_with_the_record_format():
    first = record_aad(**ROW)
    assert first == record_aad(**ROW)
    assert first[0] == aead.RECORD_FORMAT
    assert b"tenant-a" in first
    assert b"tok_abc" in first
