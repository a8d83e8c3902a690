"""Fixtures every test directory can use: a real SoftHSM2 token for the PKCS#11 tests,
and the throwaway PostgreSQL cluster (pgcluster.py).

With CI=true a missing SoftHSM2 or PostgreSQL fails these tests (`.ci/run` installs
Debian's softhsm2 and postgresql); elsewhere they are skipped with the reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pgcluster import PgCluster, find_pg_bin

SO_PIN = "50-pin-1234"
USER_PIN = "user-pin-5678"
TOKEN_LABEL = "vault-test"
_MODULE_GLOBS = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/*/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
    "/usr/lib64/pkcs11/libsofthsm2.so",
    "/usr/lib/*/libsofthsm2.so",
)


def find_softhsm_module() -> str | None:
    for pattern in _MODULE_GLOBS:
        for path in sorted(Path("/").glob(pattern.lstrip("/"))):
            if path.is_file():
                return str(path)
    return None


@dataclass
class SoftHsm:
    """A SoftHSM2 token directory of this test session, with one initialised token."""

    module: str
    conf: Path
    token_label: str = TOKEN_LABEL
    pin: str = USER_PIN
    tokens: list[str] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        """Environment of a vault process using this token (the PIN as VAULT_PKCS11_PIN)."""
        return {
            "SOFTHSM2_CONF": str(self.conf),
            "VAULT_PKCS11_PIN": self.pin,
            "VAULT_PKCS11_MODULE": self.module,
            "VAULT_PKCS11_TOKEN_LABEL": self.token_label,
        }

    def settings(self, **overrides: str) -> dict[str, str]:
        """Config settings naming the token, with a fresh key label unless given."""
        return {
            "pkcs11_module": self.module,
            "pkcs11_token_label": self.token_label,
            "pkcs11_key_label": f"kek-{uuid.uuid4().hex[:12]}",
        } | overrides

    def init_token(self, label: str) -> None:
        """Another token (seen by processes started afterwards, not by this one's library)."""
        subprocess.run(
            [
                "softhsm2-util", "--init-token", "--free", "--label", label,
                "--so-pin", SO_PIN, "--pin", self.pin,
            ],
            check=True,
            capture_output=True,
            env={**os.environ, "SOFTHSM2_CONF": str(self.conf)},
        )  # fmt: skip
        self.tokens.append(label)


@pytest.fixture(scope="session")
def softhsm(tmp_path_factory) -> SoftHsm:
    module = find_softhsm_module()
    if shutil.which("softhsm2-util") is None or module is None:
        reason = "SoftHSM2 is not installed (apt-get install softhsm2)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason}: the PKCS#11 tests must run in CI")
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("softhsm")
    (root / "tokens").mkdir()
    conf = root / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {root / 'tokens'}\n"
        "objectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
        encoding="utf-8",
    )
    # Set before the PKCS#11 library is first loaded in this process: SoftHSM2 reads it
    # at C_Initialize, which python-pkcs11 does once per process.
    os.environ["SOFTHSM2_CONF"] = str(conf)
    hsm = SoftHsm(module, conf)
    hsm.init_token(TOKEN_LABEL)
    return hsm


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    bin_dir = find_pg_bin()
    if bin_dir is None:
        reason = "PostgreSQL is not installed (no initdb under /usr/lib/postgresql/*/bin or PATH)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason}; CI must run the PostgreSQL tests (.ci/run installs it)")
        pytest.skip(reason)
    cluster = PgCluster(bin_dir)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def pg_database(pg_cluster) -> Iterator[str]:
    """A fresh, empty database of the session's cluster, for one test: its URL."""
    name = pg_cluster.create_database()
    try:
        yield pg_cluster.url(name)
    finally:
        pg_cluster.drop_database(name)


@pytest.fixture
def pg_subject_key_database(pg_cluster) -> Iterator[str]:
    """A second fresh database, for the subject keys (a PostgreSQL vault keeps them in a
    database of their own, never in the main store's): its URL."""
    name = pg_cluster.create_database()
    try:
        yield pg_cluster.url(name)
    finally:
        pg_cluster.drop_database(name)
