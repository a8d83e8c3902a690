"""The vault runs on a read-only root filesystem with only its data dir writable, as the
image runs under `docker run --read-only` or `readOnlyRootFilesystem: true`: `vaultctl
serve` as a process in a private mount namespace where every mount but the data dir (a
fresh tmpfs) is read-only (tests/data/deploy/read_only_root.sh). It starts, stores and
reveals a token, answers the image's health check, and stops cleanly on SIGTERM.

A private mount namespace needs root (CI runs as root); elsewhere the test is skipped."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from deploy_helpers import ROOT, healthcheck, image_env, make_certs, relocated

from vault.v1 import token_service_pb2 as pb
from vault.v1 import token_service_pb2_grpc

pytestmark = pytest.mark.slow

SCRIPT = ROOT / "tests" / "data" / "deploy" / "read_only_root.sh"
VAULTCTL = Path(sys.executable).parent / "vaultctl"
LISTENING = re.compile(r"^vault listening on [^\s:]+:(\d+)$", re.MULTILINE)
DEV_KEY = re.compile(r"^dev API key .*: (vk_\S+)$", re.MULTILINE)
STARTUP_SECONDS = 20.0


def _namespace_argv(data_dir: Path, *command: str) -> list[str]:
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("unshare (util-linux) is not installed")
    return [
        unshare,
        "--mount",
        "--propagation",
        "private",
        "sh",
        str(SCRIPT),
        str(data_dir),
        *command,
    ]


def _env() -> dict[str, str]:
    # The image's environment (PYTHONDONTWRITEBYTECODE, JSON logs); the test's own
    # loopback address and data dir come as flags.
    env = {k: v for k, v in os.environ.items() if not k.startswith("VAULT_")}
    return env | {k: v for k, v in image_env().items() if not k.startswith("VAULT_")}


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    unshare = _namespace_argv(path)[:4]
    can = subprocess.run(
        [*unshare, "true"], capture_output=True, text=True, timeout=30, check=False
    )
    if can.returncode != 0:
        pytest.skip(f"no private mount namespace here (needs root): {can.stderr.strip()}")
    # The harness itself: outside the data dir nothing is writable, the data dir is, and
    # it is a tmpfs of the namespace (the probe does not reach the real disk).
    probe = subprocess.run(
        _namespace_argv(
            path, "sh", "-c", f'! touch "{tmp_path}/probe" 2>/dev/null && touch "{path}/probe"'
        ),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert probe.returncode == 0, probe.stderr
    assert not (tmp_path / "probe").exists()
    assert not (path / "probe").exists()
    return path


def test_serves_with_only_the_data_dir_writable(data_dir, tmp_path):
    stdout_path, stderr_path = tmp_path / "stdout", tmp_path / "stderr"
    certs = make_certs(tmp_path / "certs")
    argv = _namespace_argv(
        data_dir,
        str(VAULTCTL),
        "serve",
        "--dev",
        "--data-dir",
        str(data_dir),
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
        "--tls-cert",
        str(certs / "tls.crt"),
        "--tls-key",
        str(certs / "tls.key"),
        "--client-ca",
        str(certs / "ca.crt"),
    )
    with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
        # The log files are opened here, outside the namespace: the process only inherits
        # their descriptors. A session of its own, so teardown ends it by this one id.
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            env=_env(),
            start_new_session=True,
        )
    try:
        port, key = _wait_ready(proc, stdout_path, stderr_path)
        mtls = grpc.ssl_channel_credentials(
            (certs / "ca.crt").read_bytes(),
            (certs / "ops.key").read_bytes(),
            (certs / "ops.crt").read_bytes(),
        )
        with grpc.secure_channel(f"127.0.0.1:{port}", mtls) as channel:
            stub = token_service_pb2_grpc.TokenServiceStub(channel)
            md = (("authorization", f"Bearer {key}"),)
            created = stub.Tokenize(
                pb.TokenizeRequest(kind="DATA_KIND_TEXT", text="read-only root"), metadata=md
            )
            revealed = stub.Detokenize(
                pb.DetokenizeRequest(token=created.token, purpose="deploy test"), metadata=md
            )
            assert revealed.text == "read-only root"

        _, command = healthcheck()
        check_argv = relocated(command[1:], certs)
        check_argv[check_argv.index("--address") + 1] = f"127.0.0.1:{port}"
        check = subprocess.run(
            [str(VAULTCTL), *check_argv], capture_output=True, text=True, timeout=30, check=False
        )
        assert (check.returncode, check.stdout.strip()) == (0, "SERVING"), check.stderr

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    stderr = stderr_path.read_text(encoding="utf-8", errors="replace")
    assert "Traceback" not in stderr
    assert "Read-only file system" not in stderr
    # Everything it wrote went to the namespace's tmpfs: the real data dir is untouched.
    assert list(data_dir.iterdir()) == []


def _wait_ready(proc: subprocess.Popen[bytes], stdout: Path, stderr: Path) -> tuple[int, str]:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        printed = stdout.read_text(encoding="utf-8", errors="replace")
        listening, key = LISTENING.search(printed), DEV_KEY.search(printed)
        if listening and key:
            return int(listening.group(1)), key.group(1)
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    pytest.fail(
        f"vaultctl serve not ready (exit {proc.poll()}):\n"
        f"{stdout.read_text(errors='replace')}\n{stderr.read_text(errors='replace')}"
    )
