"""The embedded master key: a 0600 key file, wrapping data keys under AES-256-GCM."""

from __future__ import annotations

import os
import pickle
import stat

import pytest

from vault.crypto.keyfile import KeyFileKek
from vault.errors import DecryptionError, FailedPreconditionError
from vault.secrets import SecretBytes

MASTER = bytes.fromhex("5b" * 16 + "c3" * 16)
OTHER_MASTER = bytes.fromhex("11" * 32)
DEK = SecretBytes(bytes(range(100, 132)))


def write_key_file(path, content: bytes, mode: int = 0o600):
    path.write_bytes(content)
    path.chmod(mode)
    return path


def valid_content(key: bytes = MASTER) -> bytes:
    return b"vault-kek-v1\n" + key.hex().encode() + b"\n"


def load_error(path) -> FailedPreconditionError:
    with pytest.raises(FailedPreconditionError) as raised:
        KeyFileKek.load(path)
    return raised.value


# -- create ------------------------------------------------------------------------


def test_create_writes_an_owner_only_file(tmp_path):
    path = tmp_path / "keys" / "master.key"
    created = KeyFileKek.create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = KeyFileKek.load(path)
    assert loaded.kek_id == created.kek_id
    assert loaded.unwrap(created.wrap(DEK, b"dek:1"), b"dek:1") == DEK


def test_create_is_owner_only_even_with_a_permissive_umask(tmp_path):
    old = os.umask(0)
    try:
        KeyFileKek.create(tmp_path / "master.key")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "master.key").stat().st_mode) == 0o600


def test_create_draws_a_new_key_each_time(tmp_path):
    one = KeyFileKek.create(tmp_path / "one.key")
    two = KeyFileKek.create(tmp_path / "two.key")
    assert one.kek_id != two.kek_id


def test_create_refuses_to_overwrite(tmp_path):
    path = write_key_file(tmp_path / "master.key", valid_content())
    with pytest.raises((FileExistsError, FailedPreconditionError)):
        KeyFileKek.create(path)
    assert path.read_bytes() == valid_content()
    assert KeyFileKek.load(path).kek_id == KeyFileKek(SecretBytes(MASTER)).kek_id


# -- load --------------------------------------------------------------------------


def test_load_reads_the_key(tmp_path):
    path = write_key_file(tmp_path / "master.key", valid_content())
    loaded = KeyFileKek.load(path)
    direct = KeyFileKek(SecretBytes(MASTER))
    assert loaded.kek_id == direct.kek_id
    assert direct.unwrap(loaded.wrap(DEK, b"dek:1"), b"dek:1") == DEK


def test_load_accepts_a_read_only_owner_file(tmp_path):
    path = write_key_file(tmp_path / "master.key", valid_content(), mode=0o400)
    assert KeyFileKek.load(path).kek_id == KeyFileKek(SecretBytes(MASTER)).kek_id


@pytest.mark.parametrize("mode", [0o640, 0o644, 0o604, 0o660, 0o606, 0o666, 0o610])
def test_load_refuses_a_file_others_can_reach(tmp_path, mode):
    path = write_key_file(tmp_path / "master.key", valid_content(), mode=mode)
    error = load_error(path)
    assert error.reason == "MASTER_KEY_PERMISSIONS"
    assert MASTER.hex() not in str(error)


def test_load_of_a_missing_file(tmp_path):
    assert load_error(tmp_path / "absent.key").reason == "MASTER_KEY_MISSING"


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"hello\n",
        MASTER.hex().encode(),  # no header
        b"vault-kek-v1\n",
        b"vault-kek-v1\nzz" + b"00" * 31 + b"\n",  # not hex
        b"vault-kek-v1\n" + MASTER[:31].hex().encode() + b"\n",  # 31 bytes
        b"vault-kek-v1\n" + (MASTER + b"\x00").hex().encode() + b"\n",  # 33 bytes
        b"vault-kek-v1\n\xff\xfe" + b"00" * 31,  # not ASCII
        b"vault-kek-v2\n" + MASTER.hex().encode() + b"\n",  # unknown format
    ],
    ids=[
        "empty",
        "text",
        "no-header",
        "header-only",
        "not-hex",
        "short",
        "long",
        "binary",
        "other-version",
    ],
)
def test_load_refuses_garbage(tmp_path, content):
    error = load_error(write_key_file(tmp_path / "master.key", content))
    assert error.reason == "MASTER_KEY_INVALID"
    assert MASTER.hex() not in str(error)
    assert MASTER.hex()[:31] not in str(error)


# -- wrap / unwrap -----------------------------------------------------------------


@pytest.fixture
def kek():
    return KeyFileKek(SecretBytes(MASTER))


def test_wrap_unwrap_round_trip(kek):
    wrapped = kek.wrap(DEK, b"dek:1")
    assert DEK.reveal() not in wrapped
    unwrapped = kek.unwrap(wrapped, b"dek:1")
    assert isinstance(unwrapped, SecretBytes)
    assert unwrapped.reveal() == DEK.reveal()


def test_wrapping_twice_gives_different_blobs(kek):
    one, two = kek.wrap(DEK, b"dek:1"), kek.wrap(DEK, b"dek:1")
    assert one != two
    assert kek.unwrap(one, b"dek:1") == kek.unwrap(two, b"dek:1") == DEK


@pytest.mark.parametrize("label", [b"dek:2", b"fpk:tenant-a", b"", b"dek:1\x00"])
def test_unwrap_under_another_label_fails(kek, label):
    wrapped = kek.wrap(DEK, b"dek:1")
    with pytest.raises(DecryptionError) as raised:
        kek.unwrap(wrapped, label)
    assert str(raised.value) == "decryption failed"


def test_unwrap_with_another_master_key_fails(kek):
    wrapped = kek.wrap(DEK, b"dek:1")
    with pytest.raises(DecryptionError) as raised:
        KeyFileKek(SecretBytes(OTHER_MASTER)).unwrap(wrapped, b"dek:1")
    assert str(raised.value) == "decryption failed"


@pytest.mark.parametrize("cut", [0, 5, 12, 27, -1])
def test_unwrap_of_a_truncated_blob_fails(kek, cut):
    wrapped = kek.wrap(DEK, b"dek:1")
    with pytest.raises(DecryptionError) as raised:
        kek.unwrap(wrapped[:cut], b"dek:1")
    assert str(raised.value) == "decryption failed"


def test_unwrap_of_a_tampered_blob_fails(kek):
    wrapped = bytearray(kek.wrap(DEK, b"dek:1"))
    wrapped[20] ^= 0x01
    with pytest.raises(DecryptionError):
        kek.unwrap(bytes(wrapped), b"dek:1")


# -- kek_id and handling -----------------------------------------------------------


def test_kek_id_is_stable_for_the_same_key():
    assert KeyFileKek(SecretBytes(MASTER)).kek_id == KeyFileKek(SecretBytes(MASTER)).kek_id


def test_kek_id_differs_per_key():
    assert KeyFileKek(SecretBytes(MASTER)).kek_id != KeyFileKek(SecretBytes(OTHER_MASTER)).kek_id


@pytest.mark.parametrize("master", [MASTER, OTHER_MASTER, bytes(range(32))])
def test_kek_id_does_not_reveal_the_key(master):
    kek_id = KeyFileKek(SecretBytes(master)).kek_id
    key_hex = master.hex()
    windows = {key_hex[i : i + 8] for i in range(len(key_hex) - 7)}
    assert not any(window in kek_id.lower() for window in windows)


def test_kek_does_not_show_or_pickle_its_key(kek):
    assert MASTER.hex() not in repr(kek)
    assert MASTER.hex() not in str(kek)
    with pytest.raises(TypeError):
        pickle.dumps(kek)


def test_master_key_must_be_32_bytes():
    with pytest.raises(ValueError, match="32 bytes"):
        KeyFileKek(SecretBytes(b"k" * 16))
