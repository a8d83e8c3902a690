"""`vaultctl store copy` from a served SQLite vault to PostgreSQL, then a vault serving
on the copy: every token reveals, the audit chain verifies, the last rewrap run shows
the same, a re-run copies nothing, and a target holding other data is refused without
being changed."""

from __future__ import annotations

import json
import shutil
import sqlite3

import grpc
import pytest
from pgcluster import PASSWORD

from vault.v1 import token_service_pb2 as pb
from vault.v1 import token_service_pb2_grpc as pb_grpc
from vault.v1 import types_pb2

from .support import PURPOSE, assert_one_line_failure, run_vaultctl, split_vault

pytestmark = pytest.mark.slow

CALL_TIMEOUT = 10.0
SUBJECT = "cust-copied-1"


def _tokenize_some(stub, md) -> dict[str, str]:
    out: dict[str, str] = {}
    for i in range(30):
        req = pb.TokenizeRequest(kind=types_pb2.DATA_KIND_TEXT, text=f"copied value {i}")
        req.deterministic = i % 3 == 0
        if i % 5 == 0:
            req.request_id = f"copy-{i}"
        out[stub.Tokenize(req, metadata=md, timeout=CALL_TIMEOUT).token] = req.text
    pan = pb.TokenizeRequest(kind=types_pb2.DATA_KIND_PAN, text="4242424242424242")
    out[stub.Tokenize(pan, metadata=md, timeout=CALL_TIMEOUT).token] = "4242424242424242"
    # A data subject's values: encrypted under its own key, in subject-keys.db.
    for i in range(3):
        req = pb.TokenizeRequest(
            kind=types_pb2.DATA_KIND_TEXT, text=f"subject value {i}", subject=SUBJECT
        )
        out[stub.Tokenize(req, metadata=md, timeout=CALL_TIMEOUT).token] = req.text
    return out


def _reveal_all(target: str, md, tokens: dict[str, str]) -> None:
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.TokenServiceStub(channel)
        resp = stub.BatchDetokenize(
            pb.BatchDetokenizeRequest(tokens=list(tokens), purpose=PURPOSE),
            metadata=md,
            timeout=CALL_TIMEOUT,
        )
        assert [r.text for r in resp.responses] == list(tokens.values())


def _db(url: str) -> str:
    return url.rsplit("/", 1)[1]


def _sqlite_count(path, table: str) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # noqa: S608
    finally:
        conn.close()


def _rewrap_status(*store_args: object) -> dict[str, object]:
    result = run_vaultctl("keys", "status", "--json", *store_args)
    assert result.returncode == 0, result.stderr
    rewrap = json.loads(result.stdout)["rewrap"]
    assert rewrap is not None
    return rewrap


def test_copy_to_postgres_then_serve_on_the_copy(
    launcher, pg_cluster, pg_database, pg_subject_key_database, tmp_path
):
    data = tmp_path / "data"
    source = launcher.start(data)
    md = source.metadata()
    with grpc.insecure_channel(source.target) as channel:
        tokens = _tokenize_some(pb_grpc.TokenServiceStub(channel), md)
    _reveal_all(source.target, md, tokens)  # audit records to copy
    rotated = run_vaultctl("keys", "rotate", "--data-dir", data)  # two key versions
    assert rotated.returncode == 0, rotated.stderr
    rewrapped = run_vaultctl("keys", "rewrap", "--batch", "10", "--data-dir", data)
    assert rewrapped.returncode == 0, rewrapped.stderr  # its progress row is copied
    assert source.terminate() == 0
    source_rewrap = _rewrap_status("--data-dir", data)
    assert source_rewrap["state"] == "finished"
    db_file = data / "vault.db"

    copy = ["store", "copy", "--from", f"sqlite://{db_file}", "--to", pg_database]
    # Without a place for the subject keys the copy is refused before it starts.
    no_keys = run_vaultctl(*copy, "--data-dir", data, timeout=120)
    assert "--subject-keys-to" in assert_one_line_failure(no_keys)
    assert (
        pg_cluster.psql(
            _db(pg_database), "SELECT count(*) FROM pg_tables WHERE tablename = 'tokens'"
        ).strip()
        == "0"
    )
    copy += ["--subject-keys-to", pg_subject_key_database]
    first = run_vaultctl(*copy, "--data-dir", data, "--json", timeout=120)
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    assert PASSWORD not in first.stdout + first.stderr
    tables = ("tokens", "key_versions", "callers", "audit_log", "service_keys", "rewrap_progress")
    for table in (*tables, "kek_shares"):  # no shares: a key-file vault
        rows = _sqlite_count(db_file, table)
        assert report["tables"][table] == {"rows": rows, "copied": rows}, table
    assert report["tables"]["rewrap_progress"]["rows"] == 1
    # Leases name processes of the source: not copied.
    assert not {"rewrap_lease", "job_leases"} & set(report["tables"])
    assert report["audit_records_verified"] == _sqlite_count(db_file, "audit_log") > 0
    assert report["tables"]["tokens"]["rows"] == len(tokens)
    assert report["tables"]["subject_keys"] == {"rows": 1, "copied": 1}

    # Again: nothing to do, still verified.
    again = run_vaultctl(*copy, "--data-dir", data, "--json", timeout=120)
    assert again.returncode == 0, again.stderr
    assert all(t["copied"] == 0 for t in json.loads(again.stdout)["tables"].values())

    # A vault on the copy: another data dir with the same master key.
    replica = tmp_path / "pg-data"
    replica.mkdir(mode=0o700)
    shutil.copy2(data / "master.key", replica / "master.key")
    served = launcher.start(
        replica,
        dev=False,
        extra_args=[
            "--database-url",
            pg_database,
            "--subject-key-database-url",
            pg_subject_key_database,
        ],
    )
    _reveal_all(served.target, md, tokens)  # the dev caller and the subject keys came along
    with grpc.insecure_channel(served.target) as channel:
        stub = pb_grpc.TokenServiceStub(channel)
        new = stub.Tokenize(
            pb.TokenizeRequest(kind=types_pb2.DATA_KIND_TEXT, text="written after the copy"),
            metadata=md,
            timeout=CALL_TIMEOUT,
        ).token
        # A deterministic value of the source still answers with its old token.
        again_det = pb.TokenizeRequest(
            kind=types_pb2.DATA_KIND_TEXT, text="copied value 0", deterministic=True
        )
        det_token = stub.Tokenize(again_det, metadata=md, timeout=CALL_TIMEOUT).token
        assert tokens[det_token] == "copied value 0"
    _reveal_all(served.target, md, {new: "written after the copy"})
    verify = run_vaultctl("audit", "verify", "--data-dir", replica, "--database-url", pg_database)
    assert verify.returncode == 0, verify.stderr
    # The copy's key status shows the rewrap the source ran.
    assert _rewrap_status("--data-dir", replica, "--database-url", pg_database) == source_rewrap
    assert served.terminate() == 0

    # The target now holds more than the source: a copy is refused and changes nothing.
    before = pg_cluster.psql(_db(pg_database), "SELECT count(*) FROM tokens")
    refused = run_vaultctl(*copy, "--data-dir", data, timeout=120)
    assert "other data" in assert_one_line_failure(refused)
    after = pg_cluster.psql(pg_database.rsplit("/", 1)[1], "SELECT count(*) FROM tokens")
    assert after == before


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--from", "postgresql://x@y/z", "--to", "postgresql://x@y/z"], "--from must be"),
        (["--from", "sqlite:///nonexistent/vault.db", "--to", "mysql://x"], "--to must be"),
        (["--from", "sqlite:///nonexistent/vault.db", "--to", "postgresql://x@y/z"], "no file"),
    ],
)
def test_copy_refuses_bad_arguments_in_one_line(tmp_path, args, says):
    result = run_vaultctl("store", "copy", *args, "--data-dir", tmp_path)
    assert says in assert_one_line_failure(result)


def test_copy_needs_the_master_key(tmp_path, pg_database):
    db = tmp_path / "vault.db"
    sqlite3.connect(db).close()
    result = run_vaultctl(
        "store", "copy", "--from", f"sqlite://{db}", "--to", pg_database, "--data-dir", tmp_path
    )
    assert "master key" in assert_one_line_failure(result)


def test_a_vault_split_among_custodians_copies_with_its_shares(tmp_path, pg_database):
    """No master key file: the audit chain of the copy is verified with the key K
    custodian shares rebuild (``--shares-from -``); without them, one line and no copy."""
    data = tmp_path / "vault"
    env = {"VAULT_KEK_PROVIDER": "shares"}
    shares = split_vault(data, tmp_path / "shares", 3, 2)
    two = "\n".join(shares[:2]) + "\n"
    added = run_vaultctl(
        "callers", "add", "ops", "--tenant", "ops", "--scopes", "keys", "--data-dir", data,
        "--shares-from", "-", env=env, stdin=two,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    copy = ["store", "copy", "--from", f"sqlite://{data / 'vault.db'}", "--to", pg_database]

    sealed = run_vaultctl(*copy, "--data-dir", data, env=env, timeout=120)
    assert "sealed" in assert_one_line_failure(sealed)

    done = run_vaultctl(
        *copy, "--data-dir", data, "--shares-from", "-", "--json", env=env, stdin=two, timeout=120
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["tables"]["kek_shares"]["rows"] == 1
    assert report["audit_records_verified"] >= 1
    assert not any(share in done.stdout + done.stderr for share in shares)
