"""The subject-key layer: AES-GCM and HMAC subkeys, wrapping bound to the subject."""

from __future__ import annotations

import pickle

import pytest

from vault.crypto.aead import record_aad
from vault.crypto.subject import (
    SubjectKey,
    SubjectKeyWrapper,
    new_subject_key,
    subject_key_label,
    subject_layer_aad,
)
from vault.errors import DecryptionError
from vault.secrets import SecretBytes


def test_round_trip_and_aad_binding():
    key = SubjectKey(new_subject_key())
    aad = subject_layer_aad("tenant", 1, 2, "tok_x")
    blob = key.encrypt(b"payload", aad)
    assert key.decrypt(blob, aad) == b"payload"
    with pytest.raises(DecryptionError):
        key.decrypt(blob, subject_layer_aad("tenant", 1, 2, "tok_y"))
    with pytest.raises(DecryptionError):
        SubjectKey(new_subject_key()).decrypt(blob, aad)  # another subject's key


def test_the_layer_aad_is_not_a_record_aad():
    # Neither layer's ciphertext can stand in for the other's.
    assert subject_layer_aad("t", 1, 1, "tok") != record_aad("t", 1, 1, "tok", 0)


def test_bind_is_keyed_and_deterministic():
    raw = new_subject_key()
    one, same = SubjectKey(raw), SubjectKey(SecretBytes(raw.reveal()))
    other = SubjectKey(new_subject_key())
    digest = b"\x07" * 32
    assert one.bind(digest) == same.bind(digest)
    assert one.bind(digest) != other.bind(digest)
    assert one.bind(digest) != digest


def test_wrapping_is_bound_to_the_subject():
    wrapper = SubjectKeyWrapper(new_subject_key())
    key = new_subject_key()
    label = subject_key_label("tenant", b"\x01" * 32)
    wrapped = wrapper.wrap(key, label)
    assert wrapper.unwrap(wrapped, label) == key
    for other in (
        subject_key_label("tenant", b"\x02" * 32),
        subject_key_label("tenanu", b"\x01" * 32),
    ):
        with pytest.raises(DecryptionError):
            wrapper.unwrap(wrapped, other)
    with pytest.raises(DecryptionError):
        SubjectKeyWrapper(new_subject_key()).unwrap(wrapped, label)


def test_no_repr_no_pickle():
    key = SubjectKey(new_subject_key())
    wrapper = SubjectKeyWrapper(new_subject_key())
    assert "redacted" in repr(key)
    assert "redacted" in repr(wrapper)
    for obj in (key, wrapper):
        with pytest.raises(TypeError):
            pickle.dumps(obj)
