"""The container recipe is wired to what `vaultctl serve` reads (no Docker engine runs
here, so the file is parsed and checked rather than built)."""

from __future__ import annotations

from deploy_helpers import (
    VAULT_ENV_NAMES,
    effective_config,
    final_stage,
    healthcheck,
    image_env,
    image_user,
    instructions,
    port_of,
    seconds,
    values,
    vaultctl_args,
)

from vault.cli.main import _health
from vault.server import TOKEN_SERVICE


def test_every_vault_env_name_is_a_config_setting():
    vault_env = {k for k in image_env() if k.startswith("VAULT_")}
    assert vault_env, "the image configures the vault through VAULT_* variables"
    assert vault_env <= VAULT_ENV_NAMES, vault_env - VAULT_ENV_NAMES


def test_exposed_ports_are_the_ones_the_vault_listens_on():
    cfg = effective_config(image_env())
    exposed = {int(port.split("/")[0]) for port in values("EXPOSE")}
    assert exposed == {port_of(cfg.listen), port_of(cfg.metrics_listen)}
    # Reachable from outside the container's network namespace.
    assert cfg.listen.startswith("0.0.0.0:")
    assert cfg.metrics_listen.startswith("0.0.0.0:")


def test_healthcheck_is_a_vaultctl_health_call_on_the_listen_port():
    options, command = healthcheck()
    assert command[0] == "vaultctl"
    args = vaultctl_args(command[1:])
    assert args.handler is _health
    assert port_of(args.address) == port_of(effective_config(image_env()).listen)
    assert args.address.startswith("127.0.0.1:")
    # "healthy" = can serve: the readiness service of the health contract.
    assert args.service == TOKEN_SERVICE
    # vaultctl gives up before Docker kills it, so a slow vault reads as a failed check.
    assert args.timeout < seconds(options["timeout"])


def test_runs_as_a_non_root_user_with_data_on_a_volume():
    uid, gid = image_user()
    assert uid != 0
    assert gid != 0
    assert str(effective_config(image_env()).data_dir) in values("VOLUME")
    [entry] = [step for step in final_stage() if step.cmd == "ENTRYPOINT"]
    assert entry.json
    assert list(entry.value) == ["vaultctl", "serve"]


def test_the_final_image_installs_wheels_only_and_drops_pip():
    build = instructions()[: len(instructions()) - len(final_stage())]
    wheel_steps = [s.value[0] for s in build if s.cmd == "RUN" and "pip wheel" in s.value[0]]
    assert wheel_steps, "the build stage makes the wheels"
    assert all("--only-binary=:all:" in step for step in wheel_steps)
    runs = " ".join(values("RUN"))
    assert "--no-index" in runs
    assert "pip uninstall" in runs
    assert "apt-get" not in runs
