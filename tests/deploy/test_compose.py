"""deploy/compose.yaml and the Prometheus it runs: two vault replicas on PostgreSQL,
scraped on their metrics ports, started as the image is meant to run (non-root,
read-only, the master key from a file secret). No Docker engine runs here: the file is
parsed and its wiring checked against the vault's own config loader and CLI parser."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from deploy_helpers import (
    COMPOSE,
    CONTAINERFILE,
    DEPLOY,
    PROMETHEUS,
    ROOT,
    VAULT_ENV_NAMES,
    effective_config,
    image_env,
    image_user,
    port_of,
    seconds,
    vaultctl_args,
    yaml_document,
)

from vault.cli.main import _serve
from vault.config import Config

_INTERPOLATION = re.compile(r"\$\{(\w+)(?::?[?-][^}]*)?\}")


def _compose() -> dict[str, Any]:
    return yaml_document(COMPOSE)


def _vaults() -> dict[str, dict[str, Any]]:
    """The long-running vault services (the image's entrypoint: `vaultctl serve`)."""
    return {
        name: svc
        for name, svc in _compose()["services"].items()
        if svc.get("image") == "payment-vault:local" and "entrypoint" not in svc
    }


def _interpolated(text: str) -> str:
    """Compose's ${VAR:?message} with the variable's name standing in for its value."""
    return _INTERPOLATION.sub(lambda m: m.group(1), text)


def _config(service: dict[str, Any]) -> Config:
    env = image_env() | {k: _interpolated(str(v)) for k, v in service["environment"].items()}
    return effective_config(env)


def _prometheus_config() -> dict[str, Any]:
    return yaml_document(PROMETHEUS / "prometheus.yml")


def test_two_vault_replicas_postgresql_and_prometheus():
    services = _compose()["services"]
    assert len(_vaults()) >= 2
    assert {"postgres", "prometheus"} <= set(services)
    for name, svc in _vaults().items():
        build = svc["build"]
        assert (COMPOSE.parent / build["context"]).resolve() == ROOT, name
        assert (ROOT / build["dockerfile"]).resolve() == CONTAINERFILE, name


def test_every_vault_env_name_is_one_vaultctl_serve_reads():
    for name, svc in _compose()["services"].items():
        vault_names = {k for k in svc.get("environment", {}) if k.startswith("VAULT_")}
        assert vault_names <= VAULT_ENV_NAMES, (name, vault_names - VAULT_ENV_NAMES)


def test_published_ports_are_the_vaults_listen_port_on_loopback():
    host_ports = set()
    for name, svc in _vaults().items():
        cfg = _config(svc)
        [published] = svc["ports"]
        host_ip, host_port, container_port = published.split(":")
        assert host_ip == "127.0.0.1", name
        assert int(container_port) == port_of(cfg.listen), name
        host_ports.add(int(host_port))
        assert cfg.listen.startswith("0.0.0.0:")
        assert cfg.metrics_listen.startswith("0.0.0.0:")
    assert len(host_ports) == len(_vaults()), "one host port per replica"
    for name, svc in _compose()["services"].items():
        for published in svc.get("ports", []):
            assert published.startswith("127.0.0.1:"), name


def test_prometheus_scrapes_every_replica_on_its_metrics_port():
    [job] = _prometheus_config()["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    targets = {t for static in job["static_configs"] for t in static["targets"]}
    expected = {f"{name}:{port_of(_config(svc).metrics_listen)}" for name, svc in _vaults().items()}
    assert targets == expected
    # Same network: the names resolve.
    prometheus_networks = set(_compose()["services"]["prometheus"]["networks"])
    for name, svc in _vaults().items():
        assert prometheus_networks & set(svc["networks"]), name


def test_prometheus_mounts_its_config_and_the_rules_it_loads():
    svc = _compose()["services"]["prometheus"]
    mounts = {}
    for volume in svc["volumes"]:
        source, target, *_ = volume.split(":")
        if source.startswith("."):
            assert (DEPLOY / source).is_file(), source
            mounts[target] = (DEPLOY / source).resolve()
    config_flag = next(a for a in svc["command"] if a.startswith("--config.file="))
    config_path = Path(config_flag.partition("=")[2])
    assert mounts[str(config_path)] == (PROMETHEUS / "prometheus.yml").resolve()
    for rule_file in _prometheus_config()["rule_files"]:
        assert mounts[str(config_path.parent / rule_file)] == (PROMETHEUS / rule_file).resolve()


def test_the_vaults_use_the_compose_postgresql():
    postgres = _compose()["services"]["postgres"]
    pg_env = postgres["environment"]
    for name, svc in _vaults().items():
        url = urlsplit(_config(svc).database_url)
        assert url.scheme == "postgresql", name
        assert (url.hostname, url.port) == ("postgres", 5432), name
        assert url.path == "/" + pg_env["POSTGRES_DB"], name
        assert url.username == pg_env["POSTGRES_USER"], name
        # The password is the same compose variable, never a literal in the file.
        assert url.password == _interpolated(pg_env["POSTGRES_PASSWORD"]), name
        assert set(svc["networks"]) & set(postgres["networks"]), name
        assert svc["depends_on"]["postgres"]["condition"] == "service_healthy", name
    assert _compose()["networks"]["store"]["internal"] is True
    assert "ports" not in postgres


def test_the_master_key_is_a_file_secret_where_the_vault_reads_it():
    secrets = _compose()["secrets"]
    for name, svc in _vaults().items():
        [secret] = svc["secrets"]
        assert Path(secret["target"]) == _config(svc).master_key_path, name
        source = secrets[secret["source"]]
        assert set(source) == {"file"}, "compose bind-mounts a file secret as it is"
        # The data dir the key sits in is memory (tmpfs), owned by the vault's user.
        uid, gid = image_user()
        data_dir = str(_config(svc).data_dir)
        [tmpfs] = [t for t in svc["tmpfs"] if t.split(":")[0] == data_dir]
        assert f"uid={uid}" in tmpfs
        assert f"gid={gid}" in tmpfs
        assert "mode=0700" in tmpfs
    # vault-init writes that file: its --data-dir is the host directory of the secret.
    init = _compose()["services"]["vault-init"]
    args = vaultctl_args(init["entrypoint"][1:])
    [volume] = init["volumes"]
    host_dir, container_dir = volume.split(":")[:2]
    assert Path(args.data_dir) == Path(container_dir)
    secret_file = (DEPLOY / secrets["vault_master_key"]["file"]).resolve()
    assert secret_file.parent == (DEPLOY / host_dir).resolve()
    assert secret_file.name == Config(data_dir=Path(container_dir)).master_key_path.name
    assert (
        init["environment"]["VAULT_DATABASE_URL"]
        == (next(iter(_vaults().values()))["environment"]["VAULT_DATABASE_URL"])
    )


def test_every_vault_service_runs_as_the_image_user_read_only_without_capabilities():
    uid, gid = image_user()
    services = _compose()["services"]
    for name in [*_vaults(), "vault-init"]:
        svc = services[name]
        assert svc["user"] == f"{uid}:{gid}", name
        assert svc["read_only"] is True, name
        assert svc["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in svc["security_opt"], name
    for name, svc in _vaults().items():
        # Docker's SIGKILL comes after the vault's own drain.
        assert seconds(svc["stop_grace_period"]) > _config(svc).shutdown_grace, name
        assert svc["ulimits"]["core"] == 0, name
        assert "mem_limit" in svc, name
        assert svc.get("entrypoint") is None, "the image's `vaultctl serve` runs"
        assert vaultctl_args(["serve", *svc.get("command", [])]).handler is _serve
