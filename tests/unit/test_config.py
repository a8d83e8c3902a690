"""Configuration layers and the CVC bounds."""

from __future__ import annotations

import pytest

from vault.config import load_config
from vault.errors import FailedPreconditionError


@pytest.mark.parametrize(
    "overrides",
    [{"cvc_ttl": 0}, {"cvc_ttl": 3601}, {"cvc_reveals": 0}, {"cvc_reveals": 11}],
)
def test_cvc_bounds_are_enforced(overrides):
    with pytest.raises(FailedPreconditionError, match="cvc_"):
        load_config(None, overrides)


def test_cvc_settings_from_the_environment(monkeypatch):
    monkeypatch.setenv("VAULT_CVC_TTL", "120")
    monkeypatch.setenv("VAULT_CVC_REVEALS", "3")
    cfg = load_config(None, {})
    assert (cfg.cvc_ttl, cfg.cvc_reveals) == (120.0, 3)


@pytest.mark.parametrize(
    "overrides",
    [
        {"key_max_age": -1},
        {"key_max_encryptions": 0},
        {"key_max_encryptions": 2**31 + 1},
        {"key_max_encryptions": 2**32},
    ],
)
def test_key_rotation_bounds_are_enforced(overrides):
    with pytest.raises(FailedPreconditionError, match="key_max_") as err:
        load_config(None, overrides)
    assert err.value.reason == "BAD_CONFIG"


def test_key_rotation_defaults_and_limits():
    cfg = load_config(None, {})
    assert (cfg.key_max_age, cfg.key_max_encryptions) == (365 * 86400.0, 2**30)
    cfg = load_config(None, {"key_max_age": 0, "key_max_encryptions": 2**31})
    assert (cfg.key_max_age, cfg.key_max_encryptions) == (0.0, 2**31)


def test_key_rotation_settings_from_the_environment(monkeypatch):
    monkeypatch.setenv("VAULT_KEY_MAX_AGE", "86400")
    monkeypatch.setenv("VAULT_KEY_MAX_ENCRYPTIONS", "1000000")
    cfg = load_config(None, {})
    assert (cfg.key_max_age, cfg.key_max_encryptions) == (86400.0, 1_000_000)


def test_kek_provider_settings(monkeypatch):
    monkeypatch.setenv("VAULT_KEK_PROVIDER", "pkcs11")
    monkeypatch.setenv("VAULT_PKCS11_MODULE", "/usr/lib/softhsm/libsofthsm2.so")
    monkeypatch.setenv("VAULT_PKCS11_TOKEN_LABEL", "vault")
    cfg = load_config(None, {})
    assert (cfg.kek_provider, cfg.pkcs11_module, cfg.pkcs11_token_label) == (
        "pkcs11",
        "/usr/lib/softhsm/libsofthsm2.so",
        "vault",
    )
    assert load_config(None, {"kek_provider": "shares"}).kek_provider == "shares"
    assert load_config(None, {"kek_provider": None}).kek_provider == "pkcs11"


def test_kek_provider_default_and_bad_value(monkeypatch):
    monkeypatch.delenv("VAULT_KEK_PROVIDER", raising=False)
    assert load_config(None, {}).kek_provider == "file"
    with pytest.raises(FailedPreconditionError, match="kek_provider"):
        load_config(None, {"kek_provider": "vault"})


def test_the_pkcs11_pin_is_not_a_setting():
    # The PIN is read from VAULT_PKCS11_PIN by the provider, never kept in the Config
    # (whose repr could end up in a log) and never a flag.
    with pytest.raises(FailedPreconditionError, match="unknown configuration setting"):
        load_config(None, {"pkcs11_pin": "1234"})


def test_database_url_from_the_environment_never_shows_in_a_repr(monkeypatch):
    monkeypatch.setenv("VAULT_DATABASE_URL", "postgresql://vault:s3cret-pw@db:5432/vault")
    cfg = load_config(None, {})
    assert cfg.database_url == "postgresql://vault:s3cret-pw@db:5432/vault"
    assert "s3cret-pw" not in repr(cfg)
