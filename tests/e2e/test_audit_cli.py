"""`vaultctl audit verify|tail` on a trail a real server wrote, and on copies of it
tampered with directly in SQLite (the append-only triggers dropped first)."""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
from pathlib import Path

import grpc
import pytest

from vault.v1 import token_service_pb2 as pb
from vault.v1 import token_service_pb2_grpc as pb_grpc
from vault.v1 import types_pb2

from .support import PURPOSE, assert_one_line_failure, run_vaultctl

pytestmark = pytest.mark.slow

REVEALS = 6
FORGED = (
    "INSERT INTO audit_log (seq, time, caller, tenant, action, tokens, purpose, outcome, "
    "reason, request_id, peer, detail, mac) VALUES (?, 1.0, 'dev', 'default', 'token.reveal', "
    "'[]', 'forged', 'ok', '', 'x', '', '[]', zeroblob(32))"
)


@pytest.fixture(scope="module")
def trail_dir(module_launcher, tmp_path_factory) -> Path:
    """A data dir whose trail holds REVEALS reveals, a caller added and revoked; server
    stopped."""
    data_dir = tmp_path_factory.mktemp("audit") / "data"
    vault = module_launcher.start(data_dir, metrics_listen="")
    with grpc.insecure_channel(vault.target) as channel:
        stub = pb_grpc.TokenServiceStub(channel)
        tokens = [
            stub.Tokenize(
                pb.TokenizeRequest(kind=types_pb2.DATA_KIND_TEXT, text=f"note {i}"),
                metadata=vault.metadata(),
            ).token
            for i in range(REVEALS)
        ]
        stub.BatchDetokenize(
            pb.BatchDetokenizeRequest(tokens=tokens, purpose=PURPOSE),
            metadata=(*vault.metadata(), ("x-request-id", "e2e-batch")),
        )
    assert vault.terminate() == 0
    added = run_vaultctl(
        "callers", "add", "shop", "--tenant", "t1", "--scopes", "tokenize", "--data-dir", data_dir
    )
    assert added.returncode == 0, added.stderr
    revoked = run_vaultctl("callers", "revoke", "shop", "--data-dir", data_dir)
    assert revoked.returncode == 0, revoked.stderr
    return data_dir


def tampered(trail_dir: Path, tmp_path: Path, *statements: str) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(trail_dir, copy)
    with contextlib.closing(sqlite3.connect(copy / "vault.db")) as conn:
        conn.execute("DROP TRIGGER audit_log_no_update")
        conn.execute("DROP TRIGGER audit_log_no_delete")
        for statement in statements:
            conn.execute(statement)
        conn.commit()
    return copy


def test_verify_passes_on_the_trail_the_vault_wrote(trail_dir):
    result = run_vaultctl("audit", "verify", "--data-dir", trail_dir)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"audit trail intact: {LAST} records"
    as_json = run_vaultctl("audit", "verify", "--json", "--data-dir", trail_dir)
    assert as_json.returncode == 0
    assert json.loads(as_json.stdout) == {"intact": True, "records": LAST}


def test_the_triggers_refuse_edits(trail_dir):
    with contextlib.closing(sqlite3.connect(trail_dir / "vault.db")) as conn:
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute("UPDATE audit_log SET purpose = 'x' WHERE seq = 1")
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute("DELETE FROM audit_log WHERE seq = 1")


# The dev caller's creation (serve --dev audits it: record 1), the batch of reveals (one
# record naming the REVEALS tokens: issue 14, one record per call; record 2), the
# tokenize volume of the window (one aggregated record, written when the server stops),
# the caller added and revoked.
DEV, BATCH = 1, 2
LAST = DEV + 1 + 3
TAMPERING = {
    "edited": (["UPDATE audit_log SET purpose = 'nothing to see' WHERE seq = 3"], 3, "edited"),
    "edited-tokens": ([f"UPDATE audit_log SET tokens = '[]' WHERE seq = {BATCH}"], BATCH, "edited"),  # noqa: S608
    "deleted": (["DELETE FROM audit_log WHERE seq = 3"], 3, "missing (deleted)"),
    "deleted-first": (["DELETE FROM audit_log WHERE seq = 1"], 1, "missing (deleted)"),
    "deleted-last": ([f"DELETE FROM audit_log WHERE seq = {LAST}"], LAST, "missing (deleted)"),  # noqa: S608
    "reordered": (
        [
            "UPDATE audit_log SET seq = -1 WHERE seq = 3",
            "UPDATE audit_log SET seq = 3 WHERE seq = 4",
            "UPDATE audit_log SET seq = 4 WHERE seq = -1",
        ],
        3,
        "reordered",
    ),
    "inserted": (
        [
            "UPDATE audit_log SET seq = seq + 1000 WHERE seq >= 3",
            "UPDATE audit_log SET seq = seq - 999 WHERE seq >= 1003",
            FORGED.replace("?", "3"),
        ],
        3,
        "inserted",
    ),
    "appended": ([FORGED.replace("?", str(LAST + 1))], LAST + 1, "inserted"),
}


@pytest.mark.parametrize("case", sorted(TAMPERING))
def test_verify_names_the_first_bad_record(trail_dir, tmp_path, case):
    statements, seq, problem = TAMPERING[case]
    copy = tampered(trail_dir, tmp_path, *statements)
    result = run_vaultctl("audit", "verify", "--data-dir", copy)
    line = assert_one_line_failure(result)
    assert result.returncode == 1
    assert f"audit trail broken at seq {seq}: {problem}" in line, line
    as_json = run_vaultctl("audit", "verify", "--json", "--data-dir", copy)
    assert as_json.returncode == 1
    report = json.loads(as_json.stdout)
    assert (report["intact"], report["seq"]) == (False, seq)


def test_verify_reports_a_removed_index_row(trail_dir, tmp_path):
    # The token index is not chained; a row removed behind the store's back would hide a
    # reveal from ExportSubject, so verify reports it as tampering (issue 14).
    copy = tmp_path / "copy"
    shutil.copytree(trail_dir, copy)
    with contextlib.closing(sqlite3.connect(copy / "vault.db")) as conn:
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute("DELETE FROM audit_tokens")
        conn.execute("DROP TRIGGER audit_tokens_no_delete")
        conn.execute("DELETE FROM audit_tokens WHERE token = (SELECT MIN(token) FROM audit_tokens)")
        conn.commit()
    result = run_vaultctl("audit", "verify", "--data-dir", copy)
    line = assert_one_line_failure(result)
    assert f"audit token index disagrees with record {BATCH}: an index row is missing" in line
    as_json = run_vaultctl("audit", "verify", "--json", "--data-dir", copy)
    assert as_json.returncode == 1
    assert json.loads(as_json.stdout)["seq"] == BATCH


def test_tail_json_prints_valid_json_lines(trail_dir):
    result = run_vaultctl("audit", "tail", "--json", "-n", "4", "--data-dir", trail_dir)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["seq"] for r in records] == [LAST - 3, LAST - 2, LAST - 1, LAST]
    reveal, volume, added, revoked = records
    assert (volume["action"], volume["caller"], volume["outcome"]) == (
        "token.tokenize",
        "dev",
        "ok",
    )
    assert (added["action"], added["tenant"], added["outcome"]) == ("caller.add", "t1", "ok")
    assert added["caller"].startswith("vaultctl")
    assert added["detail"] == {
        "expires": "",
        "name": "shop",
        "scopes": "tokenize",
        "cert_identity": "",
        "reveal_kinds": "",
        "reveal_rate": "0.0",
        "tokenize_rate": "",
        "tokenize_burst": "",
    }
    assert "vk_" not in result.stdout
    assert (revoked["action"], revoked["tenant"], revoked["outcome"]) == (
        "caller.revoke",
        "t1",
        "ok",
    )
    assert reveal["action"] == "token.reveal"
    assert reveal["request_id"] == "e2e-batch"
    assert len(reveal["tokens"]) == REVEALS  # the one record names every token revealed


def test_tail_for_people(trail_dir):
    result = run_vaultctl("audit", "tail", "--data-dir", trail_dir)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == LAST
    assert lines[0].startswith("#1 ")
    assert "caller.add ok" in lines[0]  # the dev caller's creation
    assert lines[1].startswith(f"#{BATCH} ")
    assert "token.reveal ok caller=dev" in lines[1]
    assert "note" not in result.stdout  # the revealed values are nowhere


def test_audit_commands_refuse_a_data_dir_without_a_vault(tmp_path):
    for command in ("verify", "tail"):
        result = run_vaultctl("audit", command, "--data-dir", tmp_path / "nothing")
        assert "no vault in the data dir" in assert_one_line_failure(result)
