"""Several master keys at once (during a master-key rotation): the primary wraps, each
key unwraps under whichever KEK wrapped it."""

from __future__ import annotations

import pytest

from vault.crypto.kekring import KekRing
from vault.crypto.keyfile import KeyFileKek
from vault.errors import DecryptionError, FailedPreconditionError
from vault.secrets import SecretBytes

OLD = KeyFileKek(SecretBytes(bytes.fromhex("11" * 32)))
NEW = KeyFileKek(SecretBytes(bytes.fromhex("22" * 32)))
STRANGER = KeyFileKek(SecretBytes(bytes.fromhex("33" * 32)))
DEK = SecretBytes(bytes(range(32)))


def test_the_primary_wraps_and_both_unwrap():
    ring = KekRing(NEW, [OLD])
    assert ring.kek_id == NEW.kek_id
    assert ring.kek_ids == [NEW.kek_id, OLD.kek_id]
    wrapped = ring.wrap(DEK, b"dek:1")
    assert NEW.unwrap(wrapped, b"dek:1") == DEK
    assert ring.unwrap(OLD.wrap(DEK, b"dek:1"), b"dek:1") == DEK
    assert ring.unwrap(wrapped, b"dek:1") == DEK


def test_unwrap_with_the_named_kek():
    ring = KekRing(NEW, [OLD])
    assert ring.unwrap_with(OLD.kek_id, OLD.wrap(DEK, b"x"), b"x") == DEK
    with pytest.raises(DecryptionError):
        ring.unwrap_with(NEW.kek_id, OLD.wrap(DEK, b"x"), b"x")
    with pytest.raises(FailedPreconditionError) as raised:
        ring.unwrap_with(STRANGER.kek_id, STRANGER.wrap(DEK, b"x"), b"x")
    assert raised.value.reason == "MASTER_KEY_NOT_CONFIGURED"
    assert STRANGER.kek_id in str(raised.value)  # a kek id is a public name


def test_a_key_no_kek_of_the_ring_wrapped_fails_like_a_bad_tag():
    ring = KekRing(NEW, [OLD])
    with pytest.raises(DecryptionError):
        ring.unwrap(STRANGER.wrap(DEK, b"x"), b"x")
    with pytest.raises(DecryptionError):
        ring.unwrap(NEW.wrap(DEK, b"x"), b"y")


def test_duplicates_collapse():
    assert KekRing(NEW, [NEW, OLD, OLD]).kek_ids == [NEW.kek_id, OLD.kek_id]
