"""Helpers for the end-to-end tests: ``vaultctl`` as a real process, and a gRPC client.

The vault is started exactly as an operator starts it (``vaultctl serve`` on port 0,
logs to files), so these tests see what a deployment sees: the process's exit codes,
its stdout and stderr, its data dir, and its behaviour under signals.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from vault.v1 import token_service_pb2 as pb
from vault.v1 import types_pb2

__all__ = [
    "DATA",
    "PURPOSE",
    "VAULTCTL",
    "VaultLauncher",
    "VaultProcess",
    "address_dict",
    "assert_one_line_failure",
    "bearer",
    "clean_env",
    "error_reason",
    "load_data",
    "revealed_value",
    "run_vaultctl",
]

# The venv's own vaultctl: `.venv/bin/vaultctl` in CI, whatever venv runs pytest here.
VAULTCTL = Path(sys.executable).parent / "vaultctl"
REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data" / "e2e"
PURPOSE = "e2e test: order fulfilment"

STARTUP_TIMEOUT = 15.0
STOP_TIMEOUT = 15.0
POLL_SECONDS = 0.02

LISTENING = re.compile(r"^vault listening on (?P<host>[^\s:]+):(?P<port>\d+)$", re.MULTILINE)
METRICS = re.compile(r"^metrics on http://(?P<host>[^\s:]+):(?P<port>\d+)/metrics$", re.MULTILINE)
API_KEY = re.compile(r"vk_[0-9a-f]{16}_[A-Za-z0-9_-]{43}")


def load_data(name: str) -> Any:
    return json.loads((DATA / name).read_text(encoding="utf-8"))


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The runner's environment minus VAULT_* (those would silently change the config)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VAULT_")}
    env.update(extra or {})
    return env


def run_vaultctl(
    *args: object,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 60.0,
    stdin: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """vaultctl as a process; ``stdin`` is what it reads (e.g. custodian shares)."""
    return subprocess.run(
        [str(VAULTCTL), *map(str, args)],
        input=stdin,
        capture_output=True,
        text=True,
        env=clean_env(env),
        cwd=cwd,
        timeout=timeout,
        check=False,
    )


def split_vault(data_dir: Path, share_dir: Path, count: int, threshold: int) -> list[str]:
    """`vaultctl keys init --shares COUNT --threshold THRESHOLD --share-dir …`: the share
    lines, one per custodian, in order."""
    made = run_vaultctl(
        "keys", "init", "--shares", count, "--threshold", threshold, "--share-dir", share_dir,
        "--data-dir", data_dir,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    return [f.read_text().strip() for f in sorted(share_dir.iterdir())]


def assert_one_line_failure(result: subprocess.CompletedProcess[str]) -> str:
    """A failed command: non-zero exit, one reason line on stderr, no traceback."""
    assert result.returncode != 0, f"expected failure, got 0; stdout={result.stdout!r}"
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}: {result.stderr!r}"
    assert lines[0].startswith("vaultctl: "), lines[0]
    return lines[0]


def bearer(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


def error_reason(err: grpc.RpcError) -> str | None:
    """google.rpc.ErrorInfo.reason of a failed call (sync or aio), if it carries one."""
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    if status is None:
        return None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason
    return None


def address_dict(address: types_pb2.Address) -> dict[str, Any]:
    return {
        "recipient": address.recipient,
        "lines": list(address.lines),
        "locality": address.locality,
        "administrative_area": address.administrative_area,
        "postal_code": address.postal_code,
        "region_code": address.region_code,
    }


def revealed_value(resp: pb.DetokenizeResponse) -> str | dict[str, Any]:
    """The value of a DetokenizeResponse: its text, or its address as a dict."""
    which = resp.WhichOneof("value")
    if which == "address":
        return address_dict(resp.address)
    assert which == "text", f"response carries no value ({which})"
    return resp.text


# -- the vault as a process ------------------------------------------------------------


@dataclass
class VaultProcess:
    """One `vaultctl serve` process and what it printed."""

    proc: subprocess.Popen[bytes]
    data_dir: Path
    stdout_path: Path
    stderr_path: Path
    host: str = ""
    port: int = 0
    metrics_host: str = ""
    metrics_port: int = 0
    # The dev API key read from DATA_DIR/dev-api-key (serve --dev), else None.
    api_key: str | None = None
    _files: list[IO[bytes]] = field(default_factory=list)

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stdout(self) -> str:
        return self.stdout_path.read_text(encoding="utf-8", errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def metadata(self, key: str | None = None) -> tuple[tuple[str, str], ...]:
        chosen = key or self.api_key
        assert chosen, "this vault has no dev key; pass one"
        return bearer(chosen)

    def running(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = STOP_TIMEOUT) -> int:
        return self.proc.wait(timeout)

    def terminate(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM and wait: the exit code of a graceful stop."""
        self.signal(signal.SIGTERM)
        return self.wait(timeout)

    def kill(self) -> None:
        """SIGKILL the process and anything it started (its own session, see start())."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(STOP_TIMEOUT)
        for f in self._files:
            f.close()
        self._files.clear()


class VaultLauncher:
    """Starts `vaultctl serve` processes and kills whatever is left at teardown."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._started: list[VaultProcess] = []

    def start(
        self,
        data_dir: Path,
        *,
        dev: bool = True,
        listen: str | None = "127.0.0.1:0",
        metrics_listen: str | None = "127.0.0.1:0",
        log_format: str | None = "json",
        pass_data_dir: bool = True,
        dev_key: bool | None = None,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> VaultProcess:
        """Start a server and wait until it listens (and, with --dev, its key is on disk).

        ``data_dir`` is where the dev key is looked for; ``pass_data_dir=False`` leaves
        the flag off so a config file or VAULT_DATA_DIR can supply it. ``dev_key``
        (default: ``dev``) says whether to wait for DATA_DIR/dev-api-key, for a config
        file that sets ``dev = true``.
        """
        args: list[str] = [str(VAULTCTL), "serve"]
        if pass_data_dir:
            args += ["--data-dir", str(data_dir)]
        if listen is not None:
            args += ["--listen", listen]
        if metrics_listen is not None:
            args += ["--metrics-listen", metrics_listen]
        if log_format is not None:
            args += ["--log-format", log_format]
        if dev:
            args.append("--dev")
        args += list(extra_args)

        self.log_dir.mkdir(parents=True, exist_ok=True)
        n = len(self._started)
        stdout_path = self.log_dir / f"vault-{n}.stdout"
        stderr_path = self.log_dir / f"vault-{n}.stderr"
        out = stdout_path.open("wb")
        err = stderr_path.open("wb")
        # A session of its own: teardown can end the server and any worker processes it
        # started (serve --workers) by this one id, and a ^C in the terminal reaches neither.
        proc = subprocess.Popen(
            args,
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            env=clean_env(env),
            cwd=cwd,
            start_new_session=True,
        )
        vault = VaultProcess(proc, data_dir, stdout_path, stderr_path, _files=[out, err])
        self._started.append(vault)
        wait_for_key = dev if dev_key is None else dev_key
        self._wait_ready(vault, dev=wait_for_key, metrics=metrics_listen != "")
        return vault

    @staticmethod
    def _wait_ready(vault: VaultProcess, *, dev: bool, metrics: bool) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        key_path = vault.data_dir / "dev-api-key"
        while True:
            printed = vault.stdout()
            listening = LISTENING.search(printed)
            metrics_line = METRICS.search(printed)
            key_text = key_path.read_text(encoding="utf-8").strip() if key_path.exists() else ""
            ready = (
                listening is not None
                and (metrics_line is not None or not metrics)
                and (API_KEY.fullmatch(key_text) is not None or not dev)
            )
            if ready:
                break
            if not vault.running():
                vault.kill()
                raise AssertionError(
                    f"vaultctl serve exited with {vault.proc.returncode} before it was ready\n"
                    f"stdout: {vault.stdout()}\nstderr: {vault.stderr()}"
                )
            if time.monotonic() > deadline:
                vault.kill()
                raise AssertionError(
                    f"vaultctl serve not ready after {STARTUP_TIMEOUT} s\n"
                    f"stdout: {vault.stdout()}\nstderr: {vault.stderr()}"
                )
            time.sleep(POLL_SECONDS)
        assert listening is not None
        vault.host, vault.port = listening["host"], int(listening["port"])
        if metrics_line is not None:
            vault.metrics_host = metrics_line["host"]
            vault.metrics_port = int(metrics_line["port"])
        vault.api_key = key_text if dev else None

    def kill_all(self) -> None:
        for vault in self._started:
            vault.kill()

    @property
    def started(self) -> Iterable[VaultProcess]:
        return tuple(self._started)
