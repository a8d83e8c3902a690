"""vaultctl commands that do not serve never import grpc (DESIGN.md, issue 11): each runs
as its own process on a real data dir, which reports the grpc modules it ended up with."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

# Runs vaultctl's main in this interpreter, then names every grpc module it loaded.
_DRIVER = """
import json, sys
from vault.cli.main import main
try:
    rc = main(sys.argv[1:])
except SystemExit as exc:
    rc = exc.code
loaded = sorted(m for m in sys.modules if m.split(".")[0].startswith("grpc"))
print(json.dumps({"rc": rc, "grpc": loaded}), file=sys.stderr)
"""


def _vaultctl(*args: object) -> tuple[dict[str, Any], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VAULT_")}
    done = subprocess.run(
        [sys.executable, "-c", _DRIVER, *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    report = json.loads(done.stderr.strip().splitlines()[-1])
    return report, done.stdout


def _initialised(tmp_path: Path) -> Path:
    data_dir = tmp_path / "var"
    report, _ = _vaultctl("keys", "init", "--data-dir", data_dir)
    assert report == {"rc": 0, "grpc": []}
    report, out = _vaultctl(
        "callers", "add", "app", "--tenant", "t1", "--scopes", "tokenize", "--data-dir", data_dir
    )
    assert report == {"rc": 0, "grpc": []}
    assert "API key for app" in out
    return data_dir


def test_keys_status_help_imports_no_grpc():
    report, out = _vaultctl("keys", "status", "--help")
    assert report == {"rc": 0, "grpc": []}
    assert "--json" in out


def test_callers_list_on_a_real_vault_imports_no_grpc(tmp_path):
    data_dir = _initialised(tmp_path)
    report, out = _vaultctl("callers", "list", "--data-dir", data_dir, "--json")
    assert report == {"rc": 0, "grpc": []}
    assert [c["name"] for c in json.loads(out)["callers"]] == ["app"]


def test_keys_status_and_audit_verify_import_no_grpc(tmp_path):
    data_dir = _initialised(tmp_path)
    report, out = _vaultctl("keys", "status", "--data-dir", data_dir, "--json")
    assert report == {"rc": 0, "grpc": []}
    assert json.loads(out)["versions"][0]["state"] == "primary"
    report, out = _vaultctl("audit", "verify", "--data-dir", data_dir)
    assert report == {"rc": 0, "grpc": []}
    assert "audit trail intact: 1 records" in out


def test_the_check_sees_grpc_where_a_command_talks_to_a_server():
    """The control: `health` does import grpc, so an empty list above means something."""
    report, _ = _vaultctl("health", "--address", "127.0.0.1:1", "--timeout", "0.2")
    assert report["rc"] == 1
    assert "grpc" in report["grpc"]
