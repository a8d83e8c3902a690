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


def test_database_url_from_the_environment_never_shows_in_a_repr(monkeypatch):
    monkeypatch.setenv("VAULT_DATABASE_URL", "postgresql://vault:s3cret-pw@db:5432/vault")
    cfg = load_config(None, {})
    assert cfg.database_url == "postgresql://vault:s3cret-pw@db:5432/vault"
    assert "s3cret-pw" not in repr(cfg)
