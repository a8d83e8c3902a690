"""`vaultctl serve --http-listen` as a process, called with the curl lines of the README
(tokenize, detokenize with a purpose, an error)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time

import pytest

pytestmark = pytest.mark.slow

PAN = "4242424242424242"
_HTTP = re.compile(r"^HTTP/JSON on (http://\S+:\d+)$", re.MULTILINE)


def _curl() -> str:
    found = shutil.which("curl")
    if found is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("curl not found")
        pytest.skip("curl not found")
    return found


def _http_base(vault) -> str:
    deadline = time.monotonic() + 15
    while (found := _HTTP.search(vault.stdout())) is None:
        assert vault.running(), vault.stderr()
        assert time.monotonic() < deadline, vault.stdout()
        time.sleep(0.05)
    return found[1]


def _post(curl: str, base: str, key: str, method: str, body: dict) -> tuple[int, dict]:
    done = subprocess.run(
        [
            curl, "-s", "-w", "\n%{http_code}",
            "-H", f"authorization: Bearer {key}", "-H", "content-type: application/json",
            "-d", json.dumps(body), f"{base}/vault.v1.TokenService/{method}",
        ],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    text, _, status = done.stdout.rpartition("\n")
    return int(status), json.loads(text)


def test_the_readme_curl_calls(launcher, tmp_path):
    curl = _curl()
    vault = launcher.start(tmp_path / "data", extra_args=["--http-listen", "127.0.0.1:0"])
    base = _http_base(vault)
    key = vault.api_key
    status, tokenized = _post(curl, base, key, "Tokenize", {"kind": "DATA_KIND_PAN", "text": PAN})
    assert status == 200
    assert tokenized["masked"] == "************4242"
    token = tokenized["token"]
    status, revealed = _post(
        curl, base, key, "Detokenize", {"token": token, "purpose": "refund #1234"}
    )
    assert (status, revealed["text"], revealed["kind"]) == (200, PAN, "DATA_KIND_PAN")
    bad = "4242424242424241"
    status, error = _post(curl, base, key, "Tokenize", {"kind": "DATA_KIND_PAN", "text": bad})
    assert status == 400
    assert error["code"] == 3
    fields = [v["field"] for d in error["details"] for v in d.get("fieldViolations", [])]
    assert fields == ["text"]
    assert bad not in json.dumps(error)
    status, _ = _post(curl, base, key + "x", "Tokenize", {"kind": "DATA_KIND_PAN", "text": PAN})
    assert status == 401
    assert vault.terminate() == 0
