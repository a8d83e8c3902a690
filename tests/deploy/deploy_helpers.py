"""Reading deploy/: the Containerfile's instructions, YAML documents, and the settings a
vault started by a manifest would really run with (through vault.config.load_config).

No Docker engine or Kubernetes cluster runs here, so the files are parsed and their
wiring is checked against the vault's own code instead of being deployed."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from typing import Any
from unittest import mock

import dockerfile
import yaml

from vault.cli.main import _parser
from vault.config import ENV_PREFIX, Config, load_config

ROOT = Path(__file__).parents[2]
DEPLOY = ROOT / "deploy"
CONTAINERFILE = DEPLOY / "Containerfile"
COMPOSE = DEPLOY / "compose.yaml"
KUBERNETES = DEPLOY / "kubernetes"
PROMETHEUS = DEPLOY / "prometheus"
SECRET_TEMPLATE = KUBERNETES / "secret.example.yaml"
MAKE_CERTS = DEPLOY / "compose" / "make-certs.py"
# Where the image, compose and the Deployment keep the TLS files; /data holds the
# Deployment's 0600 copy of the key.
CONTAINER_TLS_DIRS = ("/etc/vault-tls", "/data")

# Every environment variable `vaultctl serve` reads: one per Config field.
VAULT_ENV_NAMES = frozenset(ENV_PREFIX + f.name.upper() for f in fields(Config))


def port_of(address: str) -> int:
    """The port of HOST:PORT (also [v6]:PORT)."""
    return int(address.rpartition(":")[2])


# -- Containerfile (parsed by BuildKit's own parser, through the `dockerfile` package) ----


def instructions() -> list[dockerfile.Command]:
    return list(dockerfile.parse_file(str(CONTAINERFILE)))


def final_stage() -> list[dockerfile.Command]:
    steps = instructions()
    last_from = max(i for i, step in enumerate(steps) if step.cmd == "FROM")
    return steps[last_from:]


def values(instruction: str) -> list[str]:
    """The arguments of every ``instruction`` of the final stage, in order."""
    return [v for step in final_stage() if step.cmd == instruction.upper() for v in step.value]


def image_env() -> dict[str, str]:
    pairs = values("ENV")  # KEY, VALUE, KEY, VALUE, ...
    return dict(zip(pairs[::2], pairs[1::2], strict=True))


def image_user() -> tuple[int, int]:
    [user] = values("USER")
    uid, _, gid = user.partition(":")
    return int(uid), int(gid or uid)


def healthcheck() -> tuple[dict[str, str], list[str]]:
    """The HEALTHCHECK's options (timeout=5s, ...) and its exec-form command."""
    [step] = [step for step in final_stage() if step.cmd == "HEALTHCHECK"]
    assert step.json, "exec form: no shell in between"
    assert step.value[0] == "CMD"
    options = dict(flag.removeprefix("--").split("=", 1) for flag in step.flags)
    return options, list(step.value[1:])


def seconds(duration: str) -> float:
    """A Docker/compose duration such as 5s, 1m30s or 250ms."""
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    total, number = 0.0, ""
    i = 0
    while i < len(duration):
        ch = duration[i]
        if ch.isdigit() or ch == ".":
            number += ch
            i += 1
            continue
        unit = "ms" if duration.startswith("ms", i) else ch
        total += float(number) * units[unit]
        number = ""
        i += len(unit)
    return total


# -- TLS files --------------------------------------------------------------------------


def make_certs(out: Path) -> Path:
    """deploy/compose/make-certs.py run into ``out``: ca.crt, tls.*, ops.*, checkout.*."""
    subprocess.run(
        [sys.executable, str(MAKE_CERTS), str(out)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return out


def mtls_credentials(certs: Path, who: str = "tls") -> Any:
    """gRPC channel credentials trusting ``certs``' CA, presenting ``who``'s certificate
    (``tls``: the server's own, as the probes do; ``ops``, ``checkout``)."""
    import grpc  # noqa: PLC0415

    return grpc.ssl_channel_credentials(
        (certs / "ca.crt").read_bytes(),
        (certs / f"{who}.key").read_bytes(),
        (certs / f"{who}.crt").read_bytes(),
    )


def relocated(argv: list[str], certs: Path) -> list[str]:
    """``argv`` with the container's TLS file paths pointing into ``certs`` instead."""
    result = []
    for arg in argv:
        for container_dir in CONTAINER_TLS_DIRS:
            if arg.startswith(container_dir + "/"):
                arg = str(certs / Path(arg).name)  # noqa: PLW2901
                break
        result.append(arg)
    return result


# -- vaultctl -----------------------------------------------------------------------------


def vaultctl_args(argv: list[str]) -> Any:
    """argv (without the program name) parsed by vaultctl's own parser: an unknown flag or
    a missing value fails the test here (argparse exits)."""
    return _parser().parse_args(argv)


# -- YAML and settings -------------------------------------------------------------------


def yaml_documents(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


def yaml_document(path: Path) -> dict[str, Any]:
    [doc] = yaml_documents(path)
    return doc


@contextmanager
def environment(env: Mapping[str, str]) -> Iterator[None]:
    """os.environ is exactly ``env`` for the block (load_config reads os.environ)."""
    with mock.patch.dict(os.environ, env, clear=True):
        yield


def effective_config(env: Mapping[str, str], config_file: Path | None = None) -> Config:
    """What `vaultctl serve` would run with, given its environment and config file."""
    with environment(env):
        return load_config(config_file, {})
