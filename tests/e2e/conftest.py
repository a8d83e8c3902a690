"""Fixtures for the end-to-end tests; the helpers themselves are in support.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .support import VAULTCTL, VaultLauncher


@pytest.fixture(scope="session", autouse=True)
def _vaultctl_installed() -> None:
    assert VAULTCTL.exists(), f"vaultctl is not installed beside the interpreter ({VAULTCTL})"


@pytest.fixture
def launcher(tmp_path) -> Iterator[VaultLauncher]:
    """Starts vault processes for one test; every one still running is killed after it."""
    vaults = VaultLauncher(tmp_path / "logs")
    try:
        yield vaults
    finally:
        vaults.kill_all()


@pytest.fixture(scope="module")
def module_launcher(tmp_path_factory) -> Iterator[VaultLauncher]:
    """As ``launcher``, for servers shared by the tests of one module."""
    vaults = VaultLauncher(tmp_path_factory.mktemp("logs"))
    try:
        yield vaults
    finally:
        vaults.kill_all()
