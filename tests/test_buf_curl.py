"""A generic gRPC client (buf curl, through server reflection) can use the vault.

This is the call the README and `make run` show. buf is found as $BUF, then the copy
`make` installs in .tools/, then on PATH. Without it the test is skipped, except in CI
(CI=true), where a missing buf is a broken set-up and fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
VAULTCTL = Path(sys.executable).parent / "vaultctl"
PAN = "4242424242424242"
STARTUP_TIMEOUT = 15.0
_LISTENING = re.compile(r"^vault listening on (\S+):(\d+)$", re.MULTILINE)
_KEY = re.compile(r"vk_[0-9a-f]{16}_[A-Za-z0-9_-]{43}")
MISSING = "buf CLI not found ($BUF, .tools/node_modules/.bin/buf, PATH); `make` installs it"


def find_buf() -> str | None:
    candidates = [os.environ.get("BUF"), str(REPO / ".tools" / "node_modules" / ".bin" / "buf")]
    candidates.append(shutil.which("buf"))
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def require_buf() -> str:
    """The buf CLI; a skip where it is not installed, a failure in CI."""
    found = find_buf()
    if found is None:
        if _in_ci():
            pytest.fail(MISSING)
        pytest.skip(MISSING)
    return found


@dataclass
class DevVault:
    base_url: str
    key: str


@pytest.fixture(scope="module")
def vault(tmp_path_factory) -> Iterator[DevVault]:
    """`vaultctl serve --dev` on port 0; killed (with anything it started) afterwards."""
    if find_buf() is None and not _in_ci():
        pytest.skip(MISSING)  # nothing to run against it
    work = tmp_path_factory.mktemp("buf-curl")
    data_dir = work / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("VAULT_")}
    with (work / "stdout").open("wb") as out, (work / "stderr").open("wb") as err:
        proc = subprocess.Popen(
            [
                str(VAULTCTL), "serve", "--dev", "--data-dir", str(data_dir),
                "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
            ],
            stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env, start_new_session=True,
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
        yield DevVault(f"http://{listening[1]}:{listening[2]}", key)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(15)


def curl(buf: str, vault: DevVault, method: str, body: object | None, *, auth: bool = True):
    args = [buf, "curl", "--protocol", "grpc", "--http2-prior-knowledge"]
    if auth:
        args += ["-H", f"authorization: Bearer {vault.key}"]
    if body is not None:
        args += ["-d", json.dumps(body)]
    args.append(f"{vault.base_url}/{method}")
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)


def ok_json(result: subprocess.CompletedProcess[str]) -> dict[str, object]:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_tokenize_detokenize_and_describe_a_card(vault):
    buf = require_buf()
    tokenized = ok_json(
        curl(buf, vault, "vault.v1.TokenService/Tokenize", {"kind": "DATA_KIND_PAN", "text": PAN})
    )
    token = str(tokenized["token"])
    assert re.fullmatch(r"[0-9]{12}4242", token), token
    assert token != PAN
    assert tokenized["masked"] == "************4242"
    assert tokenized["created"] is True
    assert tokenized["fingerprint"]

    revealed = ok_json(
        curl(
            buf, vault, "vault.v1.TokenService/Detokenize", {"token": token, "purpose": "e2e test"}
        )
    )
    assert revealed["text"] == PAN
    assert revealed["kind"] == "DATA_KIND_PAN"

    described = ok_json(curl(buf, vault, "vault.v1.TokenService/GetToken", {"token": token}))
    assert described["masked"] == "************4242"
    assert described["kind"] == "DATA_KIND_PAN"
    assert described["format"] == "TOKEN_FORMAT_PAN_LAST4"
    assert PAN not in json.dumps(described)


def test_an_invalid_card_is_a_rich_error_that_does_not_quote_it(vault):
    buf = require_buf()
    bad = "4242424242424241"  # fails Luhn
    result = curl(
        buf, vault, "vault.v1.TokenService/Tokenize", {"kind": "DATA_KIND_PAN", "text": bad}
    )
    assert result.returncode != 0
    error = json.loads(result.stderr)
    assert error["code"] == "invalid_argument"
    assert {d["type"] for d in error["details"]} == {
        "google.rpc.ErrorInfo",
        "google.rpc.BadRequest",
    }
    assert bad not in result.stdout + result.stderr
    assert bad[:12] not in result.stdout + result.stderr


def test_without_a_credential_the_call_is_refused(vault):
    buf = require_buf()
    result = curl(
        buf,
        vault,
        "vault.v1.TokenService/Tokenize",
        {"kind": "DATA_KIND_PAN", "text": PAN},
        auth=False,
    )
    assert result.returncode != 0
    assert json.loads(result.stderr)["code"] == "unauthenticated"


def test_health_answers_without_a_credential(vault):
    buf = require_buf()
    assert ok_json(curl(buf, vault, "grpc.health.v1.Health/Check", {}, auth=False)) == {
        "status": "SERVING"
    }


def test_reflection_describes_every_service_it_lists(vault):
    """`buf curl --list-methods` (like `grpcurl list`/`describe`) resolves each listed service."""
    buf = require_buf()
    args = [buf, "curl", "--protocol", "grpc", "--http2-prior-knowledge", "--list-methods"]
    result = subprocess.run(
        [*args, vault.base_url], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    methods = set(result.stdout.split())
    for rpc in (
        "Tokenize",
        "Detokenize",
        "BatchTokenize",
        "BatchDetokenize",
        "GetToken",
        "DeleteToken",
    ):
        assert f"vault.v1.TokenService/{rpc}" in methods
    assert "grpc.health.v1.Health/Check" in methods
    for rpc in ("GetKeyStatus", "RotateKey", "RewrapKeys", "RetireKeyVersion"):
        assert f"vault.v1.KeyService/{rpc}" in methods


def test_key_service_rotate_and_status(vault):
    """The README's KeyService calls: rotate, then status shows both versions."""
    buf = require_buf()
    before = ok_json(curl(buf, vault, "vault.v1.KeyService/GetKeyStatus", {}))
    newest = max(int(v["version"]) for v in before["versions"])
    rotated = ok_json(curl(buf, vault, "vault.v1.KeyService/RotateKey", {}))
    assert rotated["previousPrimaryVersion"] == newest
    assert rotated["primary"]["version"] == newest + 1
    assert rotated["primary"]["state"] == "KEY_STATE_PRIMARY"
    after = ok_json(curl(buf, vault, "vault.v1.KeyService/GetKeyStatus", {}))
    states = {int(v["version"]): v["state"] for v in after["versions"]}
    assert states[newest] == "KEY_STATE_ACTIVE"
    assert states[newest + 1] == "KEY_STATE_PRIMARY"
    refused = curl(buf, vault, "vault.v1.KeyService/RetireKeyVersion", {"version": 99})
    assert json.loads(refused.stderr)["code"] == "not_found"
