"""A real vault server configured as the Kubernetes manifests configure it (the
ConfigMap's vault.toml, then the image's and the Deployment's environment), but on
loopback port 0, a temp data dir and in dev mode so it starts on an empty one; TLS and
mTLS with the certificates deploy/compose/make-certs.py writes (into tmp_path/certs)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from deploy_helpers import KUBERNETES, environment, image_env, make_certs, yaml_documents

from vault.config import load_config
from vault.server import VaultServer


def _configmap_toml() -> str:
    [configmap] = [
        d for d in yaml_documents(KUBERNETES / "configmap.yaml") if d["kind"] == "ConfigMap"
    ]
    return str(configmap["data"]["vault.toml"])


@pytest.fixture
async def deployed_vault(tmp_path: Path) -> AsyncIterator[VaultServer]:
    config_file = tmp_path / "vault.toml"
    config_file.write_text(_configmap_toml(), encoding="utf-8")
    # Of the image's VAULT_* settings, only the log format: ports and /data are the
    # test's, and no database URL: SQLite stands in for PostgreSQL here.
    env = {"VAULT_LOG_FORMAT": image_env()["VAULT_LOG_FORMAT"]}
    certs = make_certs(tmp_path / "certs")
    overrides = {
        "tls_cert": str(certs / "tls.crt"),
        "tls_key": str(certs / "tls.key"),
        "client_ca": str(certs / "ca.crt"),
        "data_dir": tmp_path / "data",
        "listen": "127.0.0.1:0",
        "metrics_listen": "127.0.0.1:0",
        "dev": True,
    }
    with environment(env):
        config = load_config(config_file, overrides)
    server = VaultServer(config)
    await server.start()
    try:
        yield server
    finally:
        await server.stop(grace=1.0)
