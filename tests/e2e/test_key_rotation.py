"""Data-key rotation with `vaultctl` processes against a running `vaultctl serve`: the
service keeps working through rotate and rewrap, old versions retire, and a rewrap
killed midway is resumed without losing or double-encrypting a record."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import grpc

from vault.v1 import token_service_pb2 as pb
from vault.v1 import token_service_pb2_grpc as pb_grpc
from vault.v1 import types_pb2

from .support import PURPOSE, VAULTCTL, assert_one_line_failure, clean_env, run_vaultctl

CALL_TIMEOUT = 10.0


def _seed(stub: pb_grpc.TokenServiceStub, md, n: int, tag: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for start in range(0, n, 200):
        values = [f"{tag} {i}" for i in range(start, min(n, start + 200))]
        batch = pb.BatchTokenizeRequest(
            requests=[pb.TokenizeRequest(kind=types_pb2.DATA_KIND_TEXT, text=v) for v in values]
        )
        resp = stub.BatchTokenize(batch, metadata=md, timeout=CALL_TIMEOUT)
        out |= {r.token: v for r, v in zip(resp.responses, values, strict=True)}
    return out


def _reveal_all(stub: pb_grpc.TokenServiceStub, md, tokens: dict[str, str]) -> None:
    items = list(tokens.items())
    for start in range(0, len(items), 500):
        chunk = items[start : start + 500]
        resp = stub.BatchDetokenize(
            pb.BatchDetokenizeRequest(tokens=[t for t, _ in chunk], purpose=PURPOSE),
            metadata=md,
            timeout=CALL_TIMEOUT,
        )
        assert [r.text for r in resp.responses] == [v for _, v in chunk]


def _versions(data_dir: Path) -> dict[int, int]:
    conn = sqlite3.connect(data_dir / "vault.db", timeout=10)
    try:
        rows = conn.execute("SELECT key_version, count(*) FROM tokens GROUP BY key_version")
        return {int(v): int(n) for v, n in rows}
    finally:
        conn.close()


def _status(data_dir: Path) -> dict[int, dict[str, object]]:
    result = run_vaultctl("keys", "status", "--json", "--data-dir", data_dir)
    assert result.returncode == 0, result.stderr
    return {v["version"]: v for v in json.loads(result.stdout)["versions"]}


def _rewrap_status(data_dir: Path) -> dict[str, object]:
    result = run_vaultctl("keys", "status", "--json", "--data-dir", data_dir)
    assert result.returncode == 0, result.stderr
    rewrap = json.loads(result.stdout)["rewrap"]
    assert rewrap is not None
    return rewrap


def _metric(vault, name: str) -> float | None:
    """An unlabelled sample from the server's metrics port (None if absent)."""
    url = f"http://{vault.metrics_host}:{vault.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=CALL_TIMEOUT) as resp:
        body = resp.read().decode()
    for line in body.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def _wait_metric(vault, name: str, value: float) -> None:
    """Until the server's next key refresh (every 5 s) exports ``value``; bounded."""
    deadline = time.monotonic() + 30
    while (seen := _metric(vault, name)) != value:
        assert time.monotonic() < deadline, (name, seen, value)
        time.sleep(0.2)


class _ClientLoop(threading.Thread):
    """Tokenize then detokenize, over and over, counting calls and failures."""

    def __init__(self, target: str, md) -> None:
        super().__init__(daemon=True)
        self.target, self.md = target, md
        self.stop = threading.Event()
        self.calls = 0
        self.failures: list[str] = []
        self.tokens: dict[str, str] = {}

    def run(self) -> None:
        with grpc.insecure_channel(self.target) as channel:
            stub = pb_grpc.TokenServiceStub(channel)
            i = 0
            while not self.stop.is_set():
                value = f"loop {i}"
                i += 1
                try:
                    tok = stub.Tokenize(
                        pb.TokenizeRequest(kind=types_pb2.DATA_KIND_TEXT, text=value),
                        metadata=self.md,
                        timeout=CALL_TIMEOUT,
                    ).token
                    back = stub.Detokenize(
                        pb.DetokenizeRequest(token=tok, purpose=PURPOSE),
                        metadata=self.md,
                        timeout=CALL_TIMEOUT,
                    )
                    if back.text != value:
                        self.failures.append(f"{tok}: wrong value")
                    self.tokens[tok] = value
                    self.calls += 2
                except grpc.RpcError as exc:
                    self.failures.append(f"{exc.code().name}: {exc.details()}")
                time.sleep(0.005)


def test_online_rotate_rewrap_retire(launcher, tmp_path):
    data_dir = tmp_path / "data"
    vault = launcher.start(data_dir)
    md = vault.metadata()
    with grpc.insecure_channel(vault.target) as channel:
        stub = pb_grpc.TokenServiceStub(channel)
        seeded = _seed(stub, md, 600, "seed")
        loop = _ClientLoop(vault.target, md)
        loop.start()
        try:
            time.sleep(0.5)
            rotated = run_vaultctl("keys", "rotate", "--data-dir", data_dir)
            assert rotated.returncode == 0, rotated.stderr
            assert "v2 is the primary" in rotated.stdout
            rewrap = run_vaultctl(
                "keys", "rewrap", "--batch", "100", "--data-dir", data_dir, timeout=120
            )
            assert rewrap.returncode == 0, rewrap.stderr
            assert "batch 1:" in rewrap.stdout
            assert "rewrap done" in rewrap.stdout
            time.sleep(0.5)
        finally:
            loop.stop.set()
            loop.join(30)
        assert loop.failures == []
        assert loop.calls > 50

        # Every record is on v2; v1 is unused, retires, and every token still reveals.
        assert set(_versions(data_dir)) == {2}
        status = _status(data_dir)
        assert (status[1]["state"], status[1]["records"]) == ("active", 0)
        assert status[2]["state"] == "primary"
        refused = run_vaultctl("keys", "retire", "2", "--data-dir", data_dir)
        assert "primary" in assert_one_line_failure(refused)
        retired = run_vaultctl("keys", "retire", "1", "--data-dir", data_dir)
        assert retired.returncode == 0, retired.stderr
        assert _status(data_dir)[1]["state"] == "retired"
        again = run_vaultctl("keys", "retire", "1", "--data-dir", data_dir)
        assert "already retired" in assert_one_line_failure(again)
        _reveal_all(stub, md, seeded | loop.tokens)

    conn = sqlite3.connect(data_dir / "vault.db", timeout=10)
    try:
        events = conn.execute(
            "SELECT action, outcome, detail FROM audit_log WHERE action LIKE 'key.%' ORDER BY seq"
        ).fetchall()
    finally:
        conn.close()
    assert [(a, o) for a, o, _ in events] == [
        ("key.rotate", "ok"),
        ("key.rewrap", "ok"),
        ("key.retire", "denied"),
        ("key.retire", "ok"),
        ("key.retire", "denied"),
    ]
    assert dict(json.loads(events[0][2])) == {"old_primary": "1", "primary": "2"}
    assert dict(json.loads(events[1][2]))["remaining"] == "0"
    verified = run_vaultctl("audit", "verify", "--data-dir", data_dir)
    assert verified.returncode == 0, verified.stderr


def test_retire_refuses_a_version_in_use(launcher, tmp_path):
    data_dir = tmp_path / "data"
    vault = launcher.start(data_dir)
    with grpc.insecure_channel(vault.target) as channel:
        _seed(pb_grpc.TokenServiceStub(channel), vault.metadata(), 5, "x")
    assert run_vaultctl("keys", "rotate", "--data-dir", data_dir).returncode == 0
    before = _status(data_dir)
    for version, words in (("1", "records still use"), ("2", "primary"), ("7", "no such")):
        result = run_vaultctl("keys", "retire", version, "--data-dir", data_dir)
        assert words in assert_one_line_failure(result)
    assert _status(data_dir) == before


def test_rewrap_killed_midway_resumes(launcher, tmp_path):
    data_dir = tmp_path / "data"
    vault = launcher.start(data_dir)
    md = vault.metadata()
    with grpc.insecure_channel(vault.target) as channel:
        stub = pb_grpc.TokenServiceStub(channel)
        seeded = _seed(stub, md, 2000, "crash")
        assert run_vaultctl("keys", "rotate", "--data-dir", data_dir).returncode == 0
        out_path = tmp_path / "rewrap.out"
        with out_path.open("wb") as out:
            proc = subprocess.Popen(
                [str(VAULTCTL), "keys", "rewrap", "--batch", "50", "--rate", "200",
                 "--data-dir", str(data_dir)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=clean_env(),
            )  # fmt: skip
            try:
                deadline = time.monotonic() + 60
                while "batch 8:" not in out_path.read_text():
                    assert proc.poll() is None, out_path.read_text()
                    assert time.monotonic() < deadline, out_path.read_text()
                    time.sleep(0.05)
                proc.send_signal(signal.SIGKILL)
            finally:
                proc.kill()
                proc.wait(10)
        # Killed midway: some rows moved, some not; each one either old or new.
        mixed = _versions(data_dir)
        assert set(mixed) == {1, 2}, mixed
        assert sum(mixed.values()) == 2000
        _reveal_all(stub, md, seeded)

        # The dead run's lease is still live: a new run is refused, one line.
        refused = run_vaultctl("keys", "rewrap", "--data-dir", data_dir)
        assert "another rewrap" in assert_one_line_failure(refused)
        killed = _rewrap_status(data_dir)
        assert killed["state"] == "running"  # until its lease runs out
        assert killed["batches"] >= 8
        assert killed["rewrapped"] == mixed[2]
        assert killed["remaining"] == 2000 - killed["rewrapped"]
        assert (killed["batch_size"], killed["rate"], killed["finished"]) == (50, 200.0, None)
        time.sleep(5.5)  # the lease expires (5 s after its last renewal)
        assert _rewrap_status(data_dir)["state"] == "interrupted"
        # The server exports the progress of the run it did not run itself.
        _wait_metric(vault, "vault_rewrap_remaining_records", float(killed["remaining"]))
        resumed = run_vaultctl("keys", "rewrap", "--batch", "500", "--data-dir", data_dir)
        assert resumed.returncode == 0, resumed.stderr
        assert _versions(data_dir) == {2: 2000}
        finished = _rewrap_status(data_dir)
        assert finished["state"] == "finished"
        assert (finished["rewrapped"], finished["remaining"]) == (2000 - mixed[2], 0)
        text = run_vaultctl("keys", "status", "--data-dir", data_dir)
        assert "rewrap to v2: finished" in text.stdout
        _wait_metric(vault, "vault_rewrap_remaining_records", 0.0)
        # No row was encrypted twice: v2 encrypted each record once.
        assert _status(data_dir)[2]["encryptions"] == 2000
        _reveal_all(stub, md, seeded)
