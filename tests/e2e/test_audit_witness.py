"""`vaultctl audit verify --witness/--expect-seq`: heads the server published to its
audit sink (kept outside the database) catch a trail rolled back to an older, internally
consistent copy, which the chain alone cannot tell from the real one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import grpc
import pytest

from vault.v1 import token_service_pb2 as pb
from vault.v1 import token_service_pb2_grpc as pb_grpc
from vault.v1 import types_pb2

from .support import PURPOSE, assert_one_line_failure, run_vaultctl

pytestmark = pytest.mark.slow


def _serve_reveals(launcher, data_dir: Path, sink: Path, reveals: int) -> None:
    env = {"VAULT_AUDIT_SINK": str(sink), "VAULT_AUDIT_HEAD_INTERVAL": "0"}
    vault = launcher.start(data_dir, metrics_listen="", env=env)
    with grpc.insecure_channel(vault.target) as channel:
        stub = pb_grpc.TokenServiceStub(channel)
        token = stub.Tokenize(
            pb.TokenizeRequest(kind=types_pb2.DATA_KIND_TEXT, text="a note"),
            metadata=vault.metadata(),
        ).token
        for _ in range(reveals):
            stub.Detokenize(
                pb.DetokenizeRequest(token=token, purpose=PURPOSE), metadata=vault.metadata()
            )
    assert vault.terminate() == 0


def _heads(sink: Path) -> list[int]:
    lines = [json.loads(line) for line in sink.read_text(encoding="utf-8").splitlines()]
    return [line["audit_head"]["seq"] for line in lines if "audit_head" in line]


def test_a_rolled_back_trail_is_caught_by_the_published_heads(launcher, tmp_path):
    data_dir, sink = tmp_path / "data", tmp_path / "outside" / "audit.jsonl"
    sink.parent.mkdir()
    _serve_reveals(launcher, data_dir, sink, 2)
    backup = tmp_path / "backup"
    shutil.copytree(data_dir, backup)
    _serve_reveals(launcher, data_dir, sink, 3)
    heads = _heads(sink)
    assert heads
    assert max(heads) >= 5
    assert "a note" not in sink.read_text(encoding="utf-8")

    ok = run_vaultctl("audit", "verify", "--witness", sink, "--data-dir", data_dir)
    assert ok.returncode == 0, ok.stderr
    newest = max(heads)
    ok = run_vaultctl("audit", "verify", "--expect-seq", newest, "--data-dir", data_dir)
    assert ok.returncode == 0, ok.stderr

    # The data dir put back to the backup: a consistent chain, shorter than published.
    shutil.rmtree(data_dir)
    shutil.copytree(backup, data_dir)
    alone = run_vaultctl("audit", "verify", "--data-dir", data_dir)
    assert alone.returncode == 0, alone.stderr
    caught = run_vaultctl("audit", "verify", "--witness", sink, "--data-dir", data_dir)
    assert caught.returncode == 1
    assert "missing (at or below a published head)" in assert_one_line_failure(caught)
    short = run_vaultctl("audit", "verify", "--expect-seq", newest, "--data-dir", data_dir)
    assert short.returncode == 1
    assert f"the chain ends before seq {newest}" in assert_one_line_failure(short)


def test_a_witness_file_that_is_not_sink_lines_is_refused(launcher, tmp_path):
    data_dir, sink = tmp_path / "data", tmp_path / "audit.jsonl"
    _serve_reveals(launcher, data_dir, sink, 1)
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n", encoding="utf-8")
    result = run_vaultctl("audit", "verify", "--witness", bad, "--data-dir", data_dir)
    assert "--witness line 1 is not an audit sink line" in assert_one_line_failure(result)
