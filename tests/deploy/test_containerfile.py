"""The container recipe is wired to what `vaultctl serve` reads (no Docker engine runs
here, so the file is parsed and checked rather than built)."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import fields
from pathlib import Path

from vault.config import ENV_PREFIX, Config

CONTAINERFILE = Path(__file__).parents[2] / "deploy" / "Containerfile"


def _instructions() -> list[tuple[str, str]]:
    text = CONTAINERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            word, _, rest = stripped.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _final_stage() -> list[tuple[str, str]]:
    instructions = _instructions()
    last_from = max(i for i, (word, _) in enumerate(instructions) if word == "FROM")
    return instructions[last_from:]


def _env() -> dict[str, str]:
    env: dict[str, str] = {}
    for word, rest in _final_stage():
        if word == "ENV":
            for item in shlex.split(rest):
                key, _, value = item.partition("=")
                env[key] = value
    return env


def test_every_vault_env_name_is_a_config_setting():
    names = {ENV_PREFIX + f.name.upper() for f in fields(Config)}
    vault_env = {k for k in _env() if k.startswith(ENV_PREFIX)}
    assert vault_env, "the image configures the vault through VAULT_* variables"
    assert vault_env <= names, vault_env - names


def test_exposed_ports_are_the_ones_the_vault_listens_on():
    env = _env()
    exposed = {
        int(p.split("/")[0])
        for word, rest in _final_stage()
        if word == "EXPOSE"
        for p in rest.split()
    }
    listen_port = int(env["VAULT_LISTEN"].rpartition(":")[2])
    metrics_port = int(env["VAULT_METRICS_LISTEN"].rpartition(":")[2])
    assert exposed == {listen_port, metrics_port}


def test_healthcheck_asks_the_grpc_health_service_on_the_listen_port():
    env = _env()
    [health] = [rest for word, rest in _final_stage() if word == "HEALTHCHECK"]
    command = re.search(r"CMD\s+(\[.*\])", health)
    assert command is not None
    args = json.loads(command.group(1))
    assert args[:2] == ["vaultctl", "health"]
    address = args[args.index("--address") + 1]
    assert address.rpartition(":")[2] == env["VAULT_LISTEN"].rpartition(":")[2]


def test_runs_as_a_non_root_user_with_data_on_a_volume():
    stage = _final_stage()
    [user] = [rest for word, rest in stage if word == "USER"]
    assert user.split(":")[0] not in {"0", "root"}
    volumes = " ".join(rest for word, rest in stage if word == "VOLUME")
    assert _env()["VAULT_DATA_DIR"] in volumes
    [entry] = [rest for word, rest in stage if word == "ENTRYPOINT"]
    assert json.loads(entry) == ["vaultctl", "serve"]
