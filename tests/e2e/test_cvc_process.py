"""CVCs through a real `vaultctl serve` process: never in the store, the audit trail or
the logs; the process refuses core dumps and debuggers."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import grpc
import pytest

from vault.v1 import token_service_pb2 as pb
from vault.v1 import token_service_pb2_grpc as pb_grpc
from vault.v1 import types_pb2

from .support import bearer

pytestmark = pytest.mark.slow

# Distinctive 4-digit codes, and their place in a JSON or text log line.
CVCS = ["8317", "9052", "7408", "6391"]


def test_cvcs_leave_no_trace_outside_memory(launcher, tmp_path):
    data = tmp_path / "data"
    vault = launcher.start(data, metrics_listen=None)
    md = bearer(vault.api_key)
    tokens = []
    with grpc.insecure_channel(vault.target) as channel:
        stub = pb_grpc.TokenServiceStub(channel)
        for cvc in CVCS:
            req = pb.TokenizeRequest(kind=types_pb2.DATA_KIND_CVC, text=cvc, subject="c-1")
            tokens.append(stub.Tokenize(req, metadata=md).token)
        revealed = stub.BatchDetokenize(
            pb.BatchDetokenizeRequest(tokens=tokens[:2], purpose="authorise"), metadata=md
        )
        assert [r.text for r in revealed.responses] == CVCS[:2]
        # A bad CVC is refused without echoing it.
        with pytest.raises(grpc.RpcError) as refused:
            stub.Tokenize(
                pb.TokenizeRequest(kind=types_pb2.DATA_KIND_CVC, text="83a7"), metadata=md
            )
        assert "83a7" not in (refused.value.details() or "")
        # No core dumps.
        limits = Path(f"/proc/{vault.pid}/limits").read_text(encoding="ascii")
        core = next(line for line in limits.splitlines() if line.startswith("Max core file size"))
        assert core.split()[4:6] == ["0", "0"], core
    assert vault.terminate() == 0

    db = sqlite3.connect(data / "vault.db")
    try:
        stored = {row[0] for row in db.execute("SELECT token FROM tokens")}
        assert not stored & set(tokens), "a CVC token reached the store"
        audit_values = json.dumps(db.execute("SELECT * FROM audit_log").fetchall(), default=str)
    finally:
        db.close()
    # The port numbers are printed and may contain any 4 digits: blank them first.
    logs = [log.replace(str(vault.port), "<port>") for log in (vault.stdout(), vault.stderr())]
    for cvc in CVCS:
        assert f'"{cvc}"' not in audit_values
        for log in logs:
            assert cvc not in log, "a CVC reached the logs"
    # The reveals were audited (tokens only).
    assert all(t in audit_values for t in tokens[:2])
