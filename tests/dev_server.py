"""`vaultctl serve --dev` as a process on port 0, for tests of outside clients (the Python
client in tests/client, the Node example in tests/examples): its address, its dev API
key, and `callers add` on its data dir."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

VAULTCTL = Path(sys.executable).parent / "vaultctl"
STARTUP_TIMEOUT = 20.0
_LISTENING = re.compile(r"^vault listening on (\S+):(\d+)$", re.MULTILINE)
_KEY = re.compile(r"vk_[0-9a-f]{16}_[A-Za-z0-9_-]{43}")


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("VAULT_")}


@dataclass
class DevServer:
    address: str  # host:port
    key: str  # the dev API key: every scope, tenant "default"
    data_dir: Path

    def add_caller(self, name: str, scopes: str) -> str:
        """`vaultctl callers add` on the server's data dir: the new caller's API key."""
        result = subprocess.run(
            [
                str(VAULTCTL), "callers", "add", name, "--tenant", "default",
                "--scopes", scopes, "--data-dir", str(self.data_dir), "--json",
            ],
            capture_output=True, text=True, timeout=60, check=False, env=_env(),
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        return str(json.loads(result.stdout)["api_key"])


@contextlib.contextmanager
def dev_server(work: Path) -> Iterator[DevServer]:
    """Starts the server, waits until it listens, kills it (and its group) afterwards."""
    data_dir = work / "data"
    with (work / "stdout").open("wb") as out, (work / "stderr").open("wb") as err:
        proc = subprocess.Popen(
            [
                str(VAULTCTL), "serve", "--dev", "--data-dir", str(data_dir),
                "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
            ],
            stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=_env(), start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        key_file = data_dir / "dev-api-key"
        while True:
            listening = _LISTENING.search((work / "stdout").read_text(encoding="utf-8"))
            key = key_file.read_text(encoding="utf-8").strip() if key_file.exists() else ""
            if listening and _KEY.fullmatch(key):
                break
            stderr = (work / "stderr").read_text(encoding="utf-8")
            assert proc.poll() is None, f"vaultctl serve exited: {stderr}"
            assert time.monotonic() < deadline, f"vaultctl serve not ready: {stderr}"
            time.sleep(0.02)
        yield DevServer(f"{listening[1]}:{listening[2]}", key, data_dir)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(15)
