"""The Node example checkout (examples/node-checkout/checkout.ts) against a real server,
through the TypeScript client that `buf generate` makes from proto/ (buf.gen.yaml, the
same command as `make clients`), run with tsx. The Go stubs of the same template are
checked to be generated too.

The tools come from `make` (.tools/: buf, ts-proto, @grpc/grpc-js, tsx; Debian's
protoc-gen-go and protoc-gen-go-grpc through `make deps`). Missing, the test skips, except
with CI=true (as `make test` runs), where it fails."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
TOOLS = REPO / ".tools" / "node_modules"
BUF = TOOLS / ".bin" / "buf"
TSX = TOOLS / ".bin" / "tsx"
EXAMPLE = REPO / "examples" / "node-checkout" / "checkout.ts"
GENERATED_TS = REPO / "examples" / "node-checkout" / "gen" / "vault" / "v1"
GENERATED_GO = REPO / "gen" / "go" / "vault" / "v1"


def _require_tools() -> None:
    missing = [
        str(p.name) for p in (BUF, TSX, TOOLS / ".bin" / "protoc-gen-ts_proto") if not p.exists()
    ]
    missing += [
        tool for tool in ("protoc-gen-go", "protoc-gen-go-grpc") if shutil.which(tool) is None
    ]
    if missing:
        reason = f"missing {', '.join(missing)}: `make clients` and `make deps` install them"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture(scope="module")
def generated() -> None:
    _require_tools()
    result = subprocess.run(
        [str(BUF), "generate"], cwd=REPO, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr


def test_buf_generates_typescript_and_go_clients(generated):
    ts = sorted(p.name for p in GENERATED_TS.glob("*.ts"))
    assert {"token_service.ts", "key_service.ts", "subject_service.ts", "types.ts"} <= set(ts)
    assert "export const TokenServiceClient" in (GENERATED_TS / "token_service.ts").read_text()
    go = {p.name for p in GENERATED_GO.glob("*.go")}
    assert {"token_service.pb.go", "token_service_grpc.pb.go", "types.pb.go"} <= go
    assert "func NewTokenServiceClient" in (GENERATED_GO / "token_service_grpc.pb.go").read_text()


def test_node_checkout_tokenizes_and_reveals_for_a_refund(generated, server):
    key = server.add_caller("node-checkout", "tokenize,detokenize")
    result = subprocess.run(
        [str(TSX), str(EXAMPLE), server.address, key],
        capture_output=True, text=True, timeout=180, check=False, stdin=subprocess.DEVNULL,
        env={**os.environ, "NODE_PATH": str(TOOLS)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    match = re.fullmatch(r"order o-2002 stored with card \*{12}4242 \((\d{12}4242)\)", lines[0])
    assert match, lines
    assert match[1] != "4242424242424242"
    assert lines[1] == "refund to card ending 4242 (order o-2002)"
    assert lines[2] == "a reveal without a purpose is refused: 3"  # INVALID_ARGUMENT
    assert "4242424242424242" not in result.stdout
