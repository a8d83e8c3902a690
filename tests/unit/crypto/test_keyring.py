"""Keyring versions and states, walked like Tink's rotation test; fingerprints."""

from __future__ import annotations

import base64
import hashlib
import hmac
import pickle
import re

import pytest

from vault.crypto.aead import RecordKey, record_aad
from vault.crypto.keyfile import KeyFileKek
from vault.crypto.keyring import (
    Fingerprinter,
    Keyring,
    KeyState,
    WrappedKeyVersion,
    dek_label,
    fingerprint_label,
)
from vault.errors import DecryptionError, FailedPreconditionError
from vault.secrets import SecretBytes

MASTER = SecretBytes(bytes.fromhex("a5" * 32))
DEK_1 = SecretBytes(bytes.fromhex("01" * 32))
DEK_2 = SecretBytes(bytes.fromhex("02" * 32))
FPK = bytes.fromhex("f0" * 32)


@pytest.fixture
def kek():
    return KeyFileKek(MASTER)


def version(kek, number, state, dek):
    return WrappedKeyVersion(number, state, kek.wrap(dek, dek_label(number)))


class Row:
    """A stored record: what the domain layer seals and later opens."""

    def __init__(self, keyring, value: bytes, token: str) -> None:
        self.value = value
        self.token = token
        key = keyring.primary
        self.key_version = key.version
        self.ciphertext = key.encrypt(value, self.aad())

    def aad(self):
        return record_aad("tenant-a", 1, 1, self.token, self.key_version)

    def open(self, keyring) -> bytes:
        return keyring.key(self.key_version).decrypt(self.ciphertext, self.aad())


def assert_fails(keyring, row):
    with pytest.raises(DecryptionError) as raised:
        row.open(keyring)
    assert str(raised.value) == "decryption failed"


def test_rotation_walk(kek):
    """old primary -> new added (active) -> new primary -> old retired."""
    wrapped_1 = kek.wrap(DEK_1, dek_label(1))
    wrapped_2 = kek.wrap(DEK_2, dek_label(2))

    # 1. Only the old version, primary.
    ring = Keyring(kek, [WrappedKeyVersion(1, KeyState.PRIMARY, wrapped_1)])
    assert ring.primary.version == 1
    assert ring.versions == [1]
    old_row = Row(ring, b"4242424242424242", "tok_1")
    assert old_row.key_version == 1
    assert old_row.open(ring) == b"4242424242424242"

    # 2. New version added as active: the old one still encrypts; both decrypt.
    ring = Keyring(
        kek,
        [
            WrappedKeyVersion(1, KeyState.PRIMARY, wrapped_1),
            WrappedKeyVersion(2, KeyState.ACTIVE, wrapped_2),
        ],
    )
    assert ring.primary.version == 1
    assert ring.versions == [1, 2]
    still_old = Row(ring, b"5555555555554444", "tok_2")
    assert still_old.key_version == 1
    assert old_row.open(ring) == b"4242424242424242"
    assert still_old.open(ring) == b"5555555555554444"
    # Another process may already be at step 3: its version-2 records must open here.
    written_elsewhere = b"\x00" * 12
    key_2 = ring.key(2)
    aad_2 = record_aad("tenant-a", 1, 1, "tok_x", 2)
    assert key_2.decrypt(key_2.encrypt(written_elsewhere, aad_2), aad_2) == written_elsewhere

    # 3. New version primary: it encrypts; old records still decrypt.
    ring = Keyring(
        kek,
        [
            WrappedKeyVersion(1, KeyState.ACTIVE, wrapped_1),
            WrappedKeyVersion(2, KeyState.PRIMARY, wrapped_2),
        ],
    )
    assert ring.primary.version == 2
    new_row = Row(ring, b"378282246310005", "tok_3")
    assert new_row.key_version == 2
    assert old_row.open(ring) == b"4242424242424242"
    assert still_old.open(ring) == b"5555555555554444"
    assert new_row.open(ring) == b"378282246310005"

    # 4. Old version retired (destroyed): its records fail; new ones decrypt.
    ring = Keyring(
        kek,
        [
            WrappedKeyVersion(1, KeyState.RETIRED, None),
            WrappedKeyVersion(2, KeyState.PRIMARY, wrapped_2),
        ],
    )
    assert ring.primary.version == 2
    assert ring.versions == [2]
    assert_fails(ring, old_row)
    assert_fails(ring, still_old)
    assert new_row.open(ring) == b"378282246310005"


def test_retired_version_is_unusable_even_if_its_wrapped_key_lingers(kek):
    ring = Keyring(kek, [version(kek, 1, KeyState.PRIMARY, DEK_1)])
    row = Row(ring, b"value", "tok_1")
    ring = Keyring(
        kek,
        [version(kek, 1, KeyState.RETIRED, DEK_1), version(kek, 2, KeyState.PRIMARY, DEK_2)],
    )
    assert ring.versions == [2]
    assert_fails(ring, row)


def test_a_record_opens_only_under_the_version_it_names(kek):
    ring = Keyring(
        kek, [version(kek, 1, KeyState.ACTIVE, DEK_1), version(kek, 2, KeyState.PRIMARY, DEK_2)]
    )
    row = Row(ring, b"value", "tok_1")
    row.key_version = 1  # a row that lies about its version (AAD and key both differ)
    assert_fails(ring, row)


def test_unknown_version_fails_like_a_bad_tag(kek):
    ring = Keyring(kek, [version(kek, 1, KeyState.PRIMARY, DEK_1)])
    with pytest.raises(DecryptionError) as raised:
        ring.key(7)
    assert str(raised.value) == "decryption failed"


def test_keyring_needs_a_primary(kek):
    with pytest.raises(FailedPreconditionError) as raised:
        Keyring(kek, [version(kek, 1, KeyState.ACTIVE, DEK_1)])
    assert raised.value.reason == "KEYRING_INVALID"


def test_empty_keyring_is_refused(kek):
    with pytest.raises(FailedPreconditionError) as raised:
        Keyring(kek, [])
    assert raised.value.reason == "KEYRING_INVALID"


def test_retired_primary_does_not_count_as_primary(kek):
    with pytest.raises(FailedPreconditionError):
        Keyring(
            kek,
            [WrappedKeyVersion(1, KeyState.RETIRED, None), version(kek, 2, KeyState.ACTIVE, DEK_2)],
        )


def test_keyring_refuses_two_primaries(kek):
    with pytest.raises(FailedPreconditionError) as raised:
        Keyring(
            kek,
            [version(kek, 1, KeyState.PRIMARY, DEK_1), version(kek, 2, KeyState.PRIMARY, DEK_2)],
        )
    assert raised.value.reason == "KEYRING_INVALID"


def test_wrapped_key_copied_to_another_version_does_not_load(kek):
    """The label binds a wrapped key to its version number."""
    wrapped_for_1 = kek.wrap(DEK_1, dek_label(1))
    with pytest.raises(DecryptionError):
        Keyring(kek, [WrappedKeyVersion(2, KeyState.PRIMARY, wrapped_for_1)])


def test_keyring_under_another_master_key_does_not_load(kek):
    wrapped = kek.wrap(DEK_1, dek_label(1))
    other = KeyFileKek(SecretBytes(bytes.fromhex("5a" * 32)))
    with pytest.raises(DecryptionError):
        Keyring(other, [WrappedKeyVersion(1, KeyState.PRIMARY, wrapped)])


def test_keyring_repr_shows_versions_not_keys(kek):
    ring = Keyring(
        kek, [version(kek, 1, KeyState.ACTIVE, DEK_1), version(kek, 2, KeyState.PRIMARY, DEK_2)]
    )
    text = repr(ring)
    assert "primary=2" in text
    assert DEK_1.reveal().hex() not in text
    assert DEK_2.reveal().hex() not in text


def test_keys_from_the_keyring_match_direct_keys(kek):
    ring = Keyring(kek, [version(kek, 1, KeyState.PRIMARY, DEK_1)])
    aad = record_aad("tenant-a", 1, 1, "tok", 1)
    assert RecordKey(1, DEK_1).decrypt(ring.primary.encrypt(b"v", aad), aad) == b"v"


def test_labels_name_what_a_key_is_for():
    assert dek_label(1) != dek_label(11)
    assert fingerprint_label("a") != fingerprint_label("b")
    assert dek_label(1) not in {fingerprint_label("1"), fingerprint_label(":1")}


# -- fingerprints ------------------------------------------------------------------


@pytest.fixture
def fingerprinter():
    return Fingerprinter(SecretBytes(FPK))


def test_fingerprint_is_deterministic(fingerprinter):
    first = fingerprinter.digest(b"kind:1", b"4242424242424242")
    assert first == fingerprinter.digest(b"kind:1", b"4242424242424242")
    assert first == Fingerprinter(SecretBytes(FPK)).digest(b"kind:1", b"4242424242424242")
    assert len(first) == 32


def test_fingerprint_is_hmac_sha256_over_length_prefixed_domain(fingerprinter):
    """Pinned: stored fingerprints and deterministic tokens depend on this construction."""
    expected = hmac.new(FPK, b"\x06kind:1" + b"4242424242424242", hashlib.sha256).digest()
    assert fingerprinter.digest(b"kind:1", b"4242424242424242") == expected


def test_fingerprint_differs_per_key(fingerprinter):
    other = Fingerprinter(SecretBytes(bytes.fromhex("0f" * 32)))
    assert fingerprinter.digest(b"kind:1", b"v") != other.digest(b"kind:1", b"v")


def test_fingerprint_differs_per_domain(fingerprinter):
    assert fingerprinter.digest(b"kind:1", b"v") != fingerprinter.digest(b"kind:2", b"v")
    assert fingerprinter.digest(b"kind:1", b"v") != fingerprinter.digest(b"subject", b"v")


def test_fingerprint_domain_and_data_do_not_run_together(fingerprinter):
    assert fingerprinter.digest(b"ab", b"c") != fingerprinter.digest(b"a", b"bc")
    assert fingerprinter.digest(b"", b"ab") != fingerprinter.digest(b"ab", b"")


def test_fingerprint_encoding(fingerprinter):
    digest = fingerprinter.digest(b"kind:1", b"4242424242424242")
    text = Fingerprinter.encode(digest)
    assert len(text) == 43
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", text)
    assert base64.urlsafe_b64decode(text + "=") == digest


@pytest.mark.parametrize("digest", [b"\xff" * 32, b"\xfb" * 32, b"\x00" * 32])
def test_fingerprint_encoding_is_url_safe_without_padding(digest):
    text = Fingerprinter.encode(digest)
    assert len(text) == 43
    assert "+" not in text
    assert "/" not in text
    assert "=" not in text


def test_fingerprinter_does_not_show_or_pickle_its_key(fingerprinter):
    assert FPK.hex() not in repr(fingerprinter)
    with pytest.raises(TypeError):
        pickle.dumps(fingerprinter)
