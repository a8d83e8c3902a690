"""The master key on a real SoftHSM2 token: generated there, sensitive and
non-extractable; wrap and unwrap done by the token; each failure one reason."""

from __future__ import annotations

import os
import pickle

import pkcs11
import pytest
from pkcs11 import Attribute, KeyType, ObjectClass

from vault.config import Config
from vault.crypto.pkcs11 import Pkcs11Kek, Pkcs11Settings
from vault.errors import DecryptionError, FailedPreconditionError, UnavailableError
from vault.master_key import PIN_ENV, open_pkcs11
from vault.secrets import SecretBytes

DEK = SecretBytes(bytes(range(100, 132)))


def settings(softhsm, **overrides) -> Pkcs11Settings:
    s = softhsm.settings(**overrides)
    return Pkcs11Settings(s["pkcs11_module"], s["pkcs11_token_label"], s["pkcs11_key_label"])


def opened(softhsm, **overrides) -> Pkcs11Kek:
    return Pkcs11Kek.open(
        settings(softhsm, **overrides), SecretBytes(softhsm.pin.encode()), create=True
    )


def refusal(fn) -> FailedPreconditionError:
    with pytest.raises(FailedPreconditionError) as raised:
        fn()
    return raised.value


def test_the_key_is_made_on_the_token_sensitive_and_not_extractable(softhsm):
    kek = opened(softhsm)
    label = kek.kek_id.rpartition("/")[2]
    token = pkcs11.lib(softhsm.module).get_token(token_label=softhsm.token_label)
    # This process is logged in already (PKCS#11 logins are per process).
    with token.open() as session:
        key = session.get_key(
            object_class=ObjectClass.SECRET_KEY, key_type=KeyType.AES, label=label
        )
        assert key[Attribute.SENSITIVE] is True
        assert key[Attribute.EXTRACTABLE] is False
        assert key[Attribute.TOKEN] is True
        assert key[Attribute.VALUE_LEN] == 32
        with pytest.raises(pkcs11.exceptions.AttributeSensitive):
            key[Attribute.VALUE]


def test_wrap_round_trip_and_label_binding(softhsm):
    kek = opened(softhsm)
    wrapped = kek.wrap(DEK, b"dek:1")
    assert DEK.reveal() not in wrapped
    assert len(wrapped) == 12 + 32 + 16
    assert kek.unwrap(wrapped, b"dek:1") == DEK
    # Random nonces: the same key wraps differently each time.
    assert kek.wrap(DEK, b"dek:1") != wrapped
    with pytest.raises(DecryptionError):
        kek.unwrap(wrapped, b"dek:2")
    tampered = wrapped[:-1] + bytes([wrapped[-1] ^ 1])
    with pytest.raises(DecryptionError):
        kek.unwrap(tampered, b"dek:1")
    with pytest.raises(DecryptionError):
        kek.unwrap(b"short", b"dek:1")


def test_another_hsm_key_cannot_unwrap(softhsm):
    one, two = opened(softhsm), opened(softhsm)
    assert one.kek_id != two.kek_id
    with pytest.raises(DecryptionError):
        two.unwrap(one.wrap(DEK, b"dek:1"), b"dek:1")


def test_an_existing_key_is_used_not_replaced(softhsm):
    s = settings(softhsm)
    pin = SecretBytes(softhsm.pin.encode())
    first = Pkcs11Kek.open(s, pin, create=True)
    wrapped = first.wrap(DEK, b"fpk:t")
    again = Pkcs11Kek.open(s, pin, create=True)
    plain = Pkcs11Kek.open(s, pin)
    assert again.unwrap(wrapped, b"fpk:t") == DEK
    assert plain.unwrap(wrapped, b"fpk:t") == DEK
    assert plain.kek_id == f"pkcs11:{softhsm.token_label}/{s.key_label}"


def test_missing_key_is_refused_without_create(softhsm):
    exc = refusal(lambda: Pkcs11Kek.open(settings(softhsm), SecretBytes(softhsm.pin.encode())))
    assert exc.reason == "HSM_KEY_MISSING"


def test_missing_module(softhsm, tmp_path):
    s = Pkcs11Settings(str(tmp_path / "libnothing.so"), softhsm.token_label, "k")
    assert refusal(lambda: Pkcs11Kek.open(s, SecretBytes(b"x"))).reason == "HSM_UNAVAILABLE"
    not_a_library = tmp_path / "libfake.so"
    not_a_library.write_bytes(b"not a shared object")
    s = Pkcs11Settings(str(not_a_library), softhsm.token_label, "k")
    assert refusal(lambda: Pkcs11Kek.open(s, SecretBytes(b"x"))).reason == "HSM_UNAVAILABLE"


def test_missing_token(softhsm):
    s = settings(softhsm, pkcs11_token_label="no-such-token")
    exc = refusal(lambda: Pkcs11Kek.open(s, SecretBytes(softhsm.pin.encode())))
    assert exc.reason == "HSM_TOKEN_MISSING"


def test_wrong_pin_is_refused_and_never_quoted(softhsm):
    wrong = "wrong-pin-000999"
    exc = refusal(lambda: Pkcs11Kek.open(settings(softhsm), SecretBytes(wrong.encode())))
    assert exc.reason == "HSM_PIN_INCORRECT"
    assert wrong not in str(exc)
    assert softhsm.pin not in str(exc)


def test_provider_refuses_pickling_and_hides_the_pin(softhsm):
    kek = opened(softhsm)
    with pytest.raises(TypeError):
        pickle.dumps(kek)
    assert softhsm.pin not in repr(kek)


# -- the PIN, as the composition root finds it ----------------------------------------


def config(softhsm, tmp_path, **extra) -> Config:
    return Config(data_dir=tmp_path, kek_provider="pkcs11", **softhsm.settings(), **extra)


def test_pin_from_the_environment(softhsm, tmp_path, monkeypatch):
    monkeypatch.setenv(PIN_ENV, softhsm.pin)
    kek = open_pkcs11(config(softhsm, tmp_path), create=True)
    assert kek.unwrap(kek.wrap(DEK, b"x"), b"x") == DEK


def test_pin_from_an_owner_only_file(softhsm, tmp_path, monkeypatch):
    monkeypatch.delenv(PIN_ENV, raising=False)
    pin_file = tmp_path / "pin"
    pin_file.write_text(softhsm.pin + "\n")
    pin_file.chmod(0o600)
    kek = open_pkcs11(config(softhsm, tmp_path, pkcs11_pin_file=str(pin_file)), create=True)
    assert kek.kek_id.startswith("pkcs11:")


def test_readable_pin_file_is_refused(softhsm, tmp_path, monkeypatch):
    monkeypatch.delenv(PIN_ENV, raising=False)
    pin_file = tmp_path / "pin"
    pin_file.write_text(softhsm.pin)
    pin_file.chmod(0o644)
    cfg = config(softhsm, tmp_path, pkcs11_pin_file=str(pin_file))
    exc = refusal(lambda: open_pkcs11(cfg))
    assert exc.reason == "HSM_PIN_FILE_PERMISSIONS"


def test_no_pin_is_refused(softhsm, tmp_path, monkeypatch):
    monkeypatch.delenv(PIN_ENV, raising=False)
    assert refusal(lambda: open_pkcs11(config(softhsm, tmp_path))).reason == "HSM_PIN_MISSING"


def test_pkcs11_settings_must_be_complete(tmp_path, monkeypatch):
    monkeypatch.setenv(PIN_ENV, "x")
    cfg = Config(data_dir=tmp_path, kek_provider="pkcs11")
    assert refusal(lambda: open_pkcs11(cfg)).reason == "BAD_CONFIG"
    assert os.environ[PIN_ENV] == "x"


def test_a_lost_session_is_unavailable_not_a_bad_key(softhsm):
    kek = opened(softhsm)
    wrapped = kek.wrap(DEK, b"dek:1")
    kek.close()
    with pytest.raises(UnavailableError) as raised:
        kek.unwrap(wrapped, b"dek:1")
    assert raised.value.reason == "HSM_UNAVAILABLE"
    with pytest.raises(UnavailableError):
        kek.wrap(DEK, b"dek:1")


def test_a_session_the_hsm_dropped_is_opened_again(softhsm):
    """An HSM restart or a network HSM reconnecting drops the session: the next unwrap
    logs in again and goes on (no vault restart). The drop is simulated by closing the
    provider's session behind its back, as the HSM would."""
    kek = opened(softhsm)
    wrapped = kek.wrap(DEK, b"dek:1")
    kek._session.close()  # the HSM's side of a lost session
    assert kek.unwrap(wrapped, b"dek:1").reveal() == DEK.reveal()
    kek._session.close()
    assert kek.unwrap(kek.wrap(DEK, b"dek:2"), b"dek:2").reveal() == DEK.reveal()
    kek.close()
