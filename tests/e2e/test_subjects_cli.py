"""`vaultctl subjects ...` and `vaultctl retention ...` as processes, beside a running
server that sees their changes without a restart."""

from __future__ import annotations

import json
import time

import grpc
import pytest

from vault.v1 import token_service_pb2 as pb
from vault.v1 import token_service_pb2_grpc as pb_grpc

from .support import PURPOSE, assert_one_line_failure, error_reason, run_vaultctl

pytestmark = pytest.mark.slow

ALICE = "cust-alice-e2e"
VALUES = {"EMAIL": "alice.e2e@example.com", "PHONE": "+447700900456"}
POLL_TIMEOUT = 15.0


@pytest.fixture(params=["sqlite", "postgres"])
def served(request, launcher, tmp_path):
    """A server, and the store arguments vaultctl needs to reach its store: none for
    SQLite (the data dir), the two database URLs for PostgreSQL."""
    store_args: list[str] = []
    if request.param == "postgres":
        store_args = [
            "--database-url",
            request.getfixturevalue("pg_database"),
            "--subject-key-database-url",
            request.getfixturevalue("pg_subject_key_database"),
        ]
    # The retention job every 0.2 s, so a policy set by the CLI is applied while we wait.
    vault = launcher.start(
        tmp_path / "data", env={"VAULT_RETENTION_INTERVAL": "0.2"}, extra_args=store_args
    )
    vault.store_args = store_args
    channel = grpc.insecure_channel(vault.target)
    stub = pb_grpc.TokenServiceStub(channel)
    yield vault, stub
    channel.close()


def _tokenize(stub, vault, kind, text, subject=""):
    req = pb.TokenizeRequest(kind=f"DATA_KIND_{kind}", text=text, subject=subject)
    return stub.Tokenize(req, metadata=vault.metadata()).token


def _reveal_code(stub, vault, token):
    try:
        stub.Detokenize(
            pb.DetokenizeRequest(token=token, purpose=PURPOSE), metadata=vault.metadata()
        )
    except grpc.RpcError as exc:
        return exc.code(), error_reason(exc)
    return grpc.StatusCode.OK, None


def _ctl(vault, *args):
    return run_vaultctl(*args, "--data-dir", vault.data_dir, *getattr(vault, "store_args", []))


def test_export_hold_erase_from_the_cli(served):
    vault, stub = served
    tokens = {_tokenize(stub, vault, k, v, ALICE): v for k, v in VALUES.items()}
    other = _tokenize(stub, vault, "EMAIL", "bob.e2e@example.com", "cust-bob-e2e")
    stub.Detokenize(
        pb.DetokenizeRequest(token=next(iter(tokens)), purpose=PURPOSE), metadata=vault.metadata()
    )

    exported = _ctl(
        vault, "subjects", "export", ALICE, "--tenant", "default", "--purpose", "art. 15", "--json"
    )
    assert exported.returncode == 0, exported.stderr
    doc = json.loads(exported.stdout)
    assert {r["token"]: r["text"] for r in doc["records"]} == tokens
    assert [r["token"] for r in doc["reveals"]] == [next(iter(tokens))]
    assert doc["held"] is False

    held = _ctl(vault, "subjects", "hold", ALICE, "--tenant", "default", "--reason", "case 7")
    assert held.returncode == 0, held.stderr
    refused = _ctl(vault, "subjects", "erase", ALICE, "--tenant", "default", "--reason", "art. 17")
    assert "legal hold" in assert_one_line_failure(refused)
    released = _ctl(
        vault, "subjects", "release", ALICE, "--tenant", "default", "--reason", "closed"
    )
    assert released.returncode == 0, released.stderr

    erased = _ctl(vault, "subjects", "erase", ALICE, "--tenant", "default", "--reason", "art. 17")
    assert erased.returncode == 0, erased.stderr
    assert "erased 2 values" in erased.stdout
    for token in tokens:
        assert _reveal_code(stub, vault, token) == (grpc.StatusCode.NOT_FOUND, "TOKEN_NOT_FOUND")
    assert _reveal_code(stub, vault, other)[0] == grpc.StatusCode.OK

    again = _ctl(vault, "subjects", "erase", ALICE, "--tenant", "default", "--reason", "art. 17")
    assert_one_line_failure(again)
    assert_one_line_failure(
        _ctl(vault, "subjects", "export", ALICE, "--tenant", "default", "--purpose", "art. 15")
    )
    assert_one_line_failure(
        _ctl(vault, "subjects", "hold", "cust-nobody", "--tenant", "default", "--reason", "x")
    )

    verified = _ctl(vault, "audit", "verify")
    assert verified.returncode == 0, verified.stderr
    tail = _ctl(vault, "audit", "tail", "-n", "50", "--json")
    records = [json.loads(line) for line in tail.stdout.splitlines()]
    subject_records = [
        (r["action"], r["outcome"]) for r in records if r["action"].startswith("subject.")
    ]
    assert subject_records == [
        ("subject.export", "ok"),
        ("subject.hold", "ok"),
        ("subject.erase", "denied"),
        ("subject.release", "ok"),
        ("subject.erase", "ok"),
        ("subject.erase", "denied"),
        ("subject.export", "denied"),
        ("subject.hold", "denied"),
    ]
    assert all(
        r["caller"].startswith("vaultctl") for r in records if r["action"].startswith("subject.")
    )
    assert ALICE not in tail.stdout  # the trail names subjects by their HMAC
    for value in VALUES.values():
        assert value not in tail.stdout


def _wait_for(predicate):
    deadline = time.monotonic() + POLL_TIMEOUT
    while not predicate():
        assert time.monotonic() < deadline, "the condition did not come true in time"
        time.sleep(0.1)


def test_retention_is_applied_by_the_running_server_and_reported(served):
    vault, stub = served
    young_phone = _tokenize(stub, vault, "PHONE", "+447700900789")
    old = _tokenize(stub, vault, "EMAIL", "old.e2e@example.com")
    kept = _tokenize(stub, vault, "EMAIL", "held.e2e@example.com", ALICE)
    held = _ctl(vault, "subjects", "hold", ALICE, "--tenant", "default", "--reason", "case 9")
    assert held.returncode == 0, held.stderr
    time.sleep(1.1)  # the values are now older than the policy's one second

    set_ = _ctl(
        vault, "retention", "set", "--tenant", "default", "--kind", "EMAIL", "--max-age", "1s"
    )
    assert set_.returncode == 0, set_.stderr
    _wait_for(lambda: _reveal_code(stub, vault, old)[0] == grpc.StatusCode.NOT_FOUND)
    assert _reveal_code(stub, vault, kept)[0] == grpc.StatusCode.OK  # held
    assert _reveal_code(stub, vault, young_phone)[0] == grpc.StatusCode.OK  # other kind

    report = _ctl(vault, "retention", "report", "--json", "--check")
    assert report.returncode == 0, report.stderr
    (row,) = json.loads(report.stdout)["policies"]
    assert (row["tenant"], row["kind"], row["max_age_seconds"]) == ("default", "EMAIL", 1.0)
    assert (row["due"], row["held"], row["purged"]) == (0, 1, 1)
    assert row["last_purge"] is not None
    text = _ctl(vault, "retention", "report")
    assert text.returncode == 0, text.stderr
    assert "EMAIL" in text.stdout

    cleared = _ctl(vault, "retention", "clear", "--tenant", "default", "--kind", "EMAIL")
    assert cleared.returncode == 0, cleared.stderr
    assert_one_line_failure(
        _ctl(vault, "retention", "clear", "--tenant", "default", "--kind", "EMAIL")
    )
    tail = _ctl(vault, "audit", "tail", "-n", "50", "--json")
    actions = [json.loads(line)["action"] for line in tail.stdout.splitlines()]
    assert actions.count("retention.purge") == 1
    assert "retention.set" in actions
    assert _ctl(vault, "audit", "verify").returncode == 0


@pytest.mark.parametrize(
    "args",
    [
        ["retention", "set", "--tenant", "t", "--kind", "CVC", "--max-age", "1d"],
        ["retention", "set", "--tenant", "t", "--kind", "CARD", "--max-age", "1d"],
        ["retention", "set", "--tenant", "t", "--kind", "PAN", "--max-age=-3d"],
        ["retention", "set", "--tenant", "t", "--kind", "PAN", "--max-age", "forever"],
        ["subjects", "erase", "s", "--tenant", "t", "--reason", " "],
    ],
)
def test_bad_cli_input_is_one_line(tmp_path, args):
    init = run_vaultctl("keys", "init", "--data-dir", tmp_path / "data")
    assert init.returncode == 0, init.stderr
    assert_one_line_failure(run_vaultctl(*args, "--data-dir", tmp_path / "data"))


def test_cli_export_needs_a_purpose_and_takes_any_variant_of_the_id(served):
    """`subjects export` needs --purpose; its export is audited as a reveal of every
    value (the next export lists them); a subject id typed with other spaces or in
    another Unicode form (NFD here) is the same subject."""
    vault, stub = served
    subject = "cust-nu\u00f1ez-e2e"
    token = _tokenize(stub, vault, "EMAIL", "ana.e2e@example.com", f" {subject} ")
    missing = _ctl(vault, "subjects", "export", subject, "--tenant", "default")
    assert missing.returncode != 0
    assert "--purpose" in missing.stderr
    variant = "\u3000cust-nun\u0303ez-e2e"
    export = ["subjects", "export", variant, "--tenant", "default", "--json"]
    first = _ctl(vault, *export, "--purpose", "art. 15 request #3")
    assert first.returncode == 0, first.stderr
    doc = json.loads(first.stdout)
    assert doc["subject"] == subject
    assert [r["token"] for r in doc["records"]] == [token]
    assert doc["reveals"] == []
    second = json.loads(_ctl(vault, *export, "--purpose", "art. 15 follow-up").stdout)
    assert [(r["token"], r["purpose"]) for r in second["reveals"]] == [
        (token, "art. 15 request #3")
    ]
    assert second["reveals"][0]["caller"].startswith("vaultctl")
