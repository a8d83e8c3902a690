"""`vaultctl serve --database-url postgresql://…` as real processes on the test cluster:
start-up errors, two replicas on one database (writes, key rotation, the job lease),
the database restarting under load without losing an acknowledged token, and a master
key split into custodian shares, then rotated to a key file, on the shared store."""

from __future__ import annotations

import json
import re
import shutil
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from pgcluster import PASSWORD

from vault.v1 import token_service_pb2 as pb
from vault.v1 import token_service_pb2_grpc as pb_grpc
from vault.v1 import types_pb2

from .support import PURPOSE, assert_one_line_failure, bearer, run_vaultctl
from .test_master_keys import add_caller, health, reveal, tokenize, unseal, vaultctl_with_stdin

pytestmark = pytest.mark.slow

CALL_TIMEOUT = 10.0
# How long a test waits for something the vault does by itself (a bound, not a
# measurement: the assertions are on outcomes).
SETTLE_TIMEOUT = 60.0
# Background work at test speed: keyring reloads and the TTL purge every half second.
FAST_JOBS = {"VAULT_KEY_REFRESH_INTERVAL": "0.5", "VAULT_PURGE_INTERVAL": "0.5"}


def _db(url: str) -> str:
    return url.rsplit("/", 1)[1]


def _tokenize(stub, md, value: str) -> str:
    return stub.Tokenize(
        pb.TokenizeRequest(kind=types_pb2.DATA_KIND_TEXT, text=value),
        metadata=md,
        timeout=CALL_TIMEOUT,
    ).token


def _reveal(stub, md, token: str) -> str:
    return stub.Detokenize(
        pb.DetokenizeRequest(token=token, purpose=PURPOSE), metadata=md, timeout=CALL_TIMEOUT
    ).text


def _wait_until(check, what: str) -> None:
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {SETTLE_TIMEOUT} s: {what}")
        time.sleep(0.1)


def _lease_held(vault) -> bool:
    url = f"http://{vault.metrics_host}:{vault.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    found = re.search(r'^vault_job_lease_held\{job="ttl-purge"\} (\S+)$', text, re.MULTILINE)
    return found is not None and float(found[1]) == 1.0


def _replica_dir(tmp_path: Path, first: Path, name: str) -> Path:
    """A second replica's data dir: the same master key, nothing else."""
    other = tmp_path / name
    other.mkdir(mode=0o700)
    shutil.copy2(first / "master.key", other / "master.key")
    return other


@pytest.mark.parametrize(
    ("make_url", "says"),
    [
        (lambda c, db: c.url(db, password="wrong-password"), "refused the credentials"),
        (lambda c, _db: c.url("missing_db"), "no such database"),
        (lambda c, db: c.url(db).replace(f":{c.port}/", ":1/"), "cannot reach the database"),
        (lambda _c, _db: "mysql://x@y/z", "database_url must start with"),
    ],
    ids=["wrong-password", "no-database", "unreachable", "bad-scheme"],
)
def test_serve_start_up_errors_are_one_line_without_the_password(
    launcher, pg_cluster, pg_database, pg_subject_key_database, tmp_path, make_url, says
):
    url = make_url(pg_cluster, _db(pg_database))
    result = run_vaultctl(
        "serve",
        "--dev",
        "--data-dir",
        tmp_path / "data",
        "--database-url",
        url,
        "--subject-key-database-url",
        pg_subject_key_database,
        timeout=60,
    )
    line = assert_one_line_failure(result)
    assert says in line
    for secret in (PASSWORD, "wrong-password"):
        assert secret not in result.stderr
        assert secret not in result.stdout


@pytest.mark.parametrize(
    ("keys_url", "says"),
    [
        (None, "needs subject_key_database_url"),
        ("sqlite:///tmp/subject-keys.db", "needs subject_key_database_url"),
        ("main", "another database"),
    ],
    ids=["missing", "local-file", "the-main-database"],
)
def test_a_postgres_vault_without_its_own_subject_key_database_is_refused(
    pg_database, tmp_path, keys_url, says
):
    init = run_vaultctl(
        "keys", "init", "--data-dir", tmp_path / "data", "--database-url", pg_database
    )
    assert init.returncode == 0, init.stderr
    extra = [] if keys_url is None else ["--subject-key-database-url", keys_url]
    if keys_url == "main":
        extra = ["--subject-key-database-url", pg_database]
    store = ["--data-dir", tmp_path / "data", "--database-url", pg_database, *extra]
    for command in (
        ["serve"],
        ["subjects", "export", "cust-1", "--tenant", "default", "--purpose", "art. 15"],
    ):
        result = run_vaultctl(*command, *store, timeout=60)
        line = assert_one_line_failure(result)
        assert says in line
        assert PASSWORD not in result.stderr + result.stdout


def test_schema_too_new_refuses_to_start_and_changes_nothing(
    pg_cluster, pg_database, pg_subject_key_database, tmp_path
):
    init = run_vaultctl(
        "keys", "init", "--data-dir", tmp_path / "data", "--database-url", pg_database
    )
    assert init.returncode == 0, init.stderr
    pg_cluster.psql(_db(pg_database), "INSERT INTO schema_migrations (version) VALUES (9999)")
    before = pg_cluster.psql(_db(pg_database), "SELECT version FROM schema_migrations ORDER BY 1")
    result = run_vaultctl(
        "serve",
        "--data-dir",
        tmp_path / "data",
        "--database-url",
        pg_database,
        "--subject-key-database-url",
        pg_subject_key_database,
        timeout=60,
    )
    assert "newer than this vault" in assert_one_line_failure(result)
    after = pg_cluster.psql(_db(pg_database), "SELECT version FROM schema_migrations ORDER BY 1")
    assert after == before


def test_two_replicas_share_tokens_rotation_and_the_job_lease(
    launcher, pg_cluster, pg_database, pg_subject_key_database, tmp_path
):
    url = pg_database
    args = ["--database-url", url, "--subject-key-database-url", pg_subject_key_database]
    first_dir = tmp_path / "a"
    a = launcher.start(first_dir, extra_args=args, env=FAST_JOBS)
    b_dir = _replica_dir(tmp_path, first_dir, "b")
    b = launcher.start(b_dir, dev=False, extra_args=args, env=FAST_JOBS)
    md = a.metadata()  # the dev caller lives in the shared store: valid on both
    with grpc.insecure_channel(a.target) as ca, grpc.insecure_channel(b.target) as cb:
        sa, sb = pb_grpc.TokenServiceStub(ca), pb_grpc.TokenServiceStub(cb)
        through_a = {_tokenize(sa, md, f"from a {i}"): f"from a {i}" for i in range(20)}
        through_b = {_tokenize(sb, md, f"from b {i}"): f"from b {i}" for i in range(20)}
        for token, value in through_a.items():
            assert _reveal(sb, md, token) == value
        for token, value in through_b.items():
            assert _reveal(sa, md, token) == value

        # Rotate through one replica's data dir: both write under v2 soon after.
        rotated = run_vaultctl("keys", "rotate", "--data-dir", first_dir, *args)
        assert rotated.returncode == 0, rotated.stderr
        assert "v2 is the primary" in rotated.stdout

        def writes_under_v2(stub, tag: str) -> bool:
            token = _tokenize(stub, md, f"after rotation {tag} {time.monotonic()}")
            assert re.fullmatch(r"tok_[a-z2-7]+", token)  # safe to quote in SQL
            sql = f"SELECT key_version FROM tokens WHERE token = '{token}'"  # noqa: S608
            version = pg_cluster.psql(_db(url), sql)
            return version.strip() == "2"

        _wait_until(lambda: writes_under_v2(sa, "a"), "replica a uses key v2")
        _wait_until(lambda: writes_under_v2(sb, "b"), "replica b uses key v2")
        # Old records still read through both.
        for token, value in (through_a | through_b).items():
            assert _reveal(sa, md, token) == value
            assert _reveal(sb, md, token) == value
        # Rewrap through the other replica's data dir, then v1 can be retired.
        rewrap = run_vaultctl("keys", "rewrap", "--data-dir", b_dir, *args, timeout=120)
        assert rewrap.returncode == 0, rewrap.stderr
        retire = run_vaultctl("keys", "retire", "1", "--data-dir", b_dir, *args)
        assert retire.returncode == 0, retire.stderr
        status = run_vaultctl("keys", "status", "--json", "--data-dir", first_dir, *args)
        versions = {v["version"]: v for v in json.loads(status.stdout)["versions"]}
        assert versions[1]["state"] == "retired"
        for token, value in (through_a | through_b).items():
            assert _reveal(sb, md, token) == value

        # A caller added with vaultctl on the shared store works on both at once, and
        # vaultctl's audit record joins the replicas' reveals in one chain.
        added = run_vaultctl(
            "callers", "add", "checkout", "--tenant", "default", "--scopes",
            "tokenize,detokenize", "--json", "--data-dir", b_dir, *args,
        )  # fmt: skip
        assert added.returncode == 0, added.stderr
        checkout = (("authorization", f"Bearer {json.loads(added.stdout)['api_key']}"),)
        token = _tokenize(sa, checkout, "checkout value")
        assert _reveal(sb, checkout, token) == "checkout value"
    verify = run_vaultctl("audit", "verify", "--json", "--data-dir", first_dir, *args)
    assert verify.returncode == 0, verify.stderr
    assert json.loads(verify.stdout)["intact"] is True
    assert json.loads(verify.stdout)["records"] >= len(through_a) + len(through_b) + 1

    # The TTL purge runs on exactly one replica; when that one dies, the other takes over.
    _wait_until(lambda: _lease_held(a) or _lease_held(b), "one replica takes the purge lease")
    holder, other = (a, b) if _lease_held(a) else (b, a)
    assert not _lease_held(other)
    holder.kill()  # no clean stop: the lease is left to expire
    _wait_until(lambda: _lease_held(other), "the other replica takes the purge lease over")
    for vault in (a, b):
        assert PASSWORD not in vault.stdout() + vault.stderr()


class _TokenizeLoop(threading.Thread):
    """Tokenizes until stopped; keeps every acknowledged token and every failure code."""

    def __init__(self, target: str, md) -> None:
        super().__init__(daemon=True)
        self.target, self.md = target, md
        self.stop = threading.Event()
        self.acknowledged: dict[str, str] = {}
        self.failures: list[str] = []
        self.successes_after: dict[str, int] = {}
        self.mark = ""

    def run(self) -> None:
        with grpc.insecure_channel(self.target) as channel:
            stub = pb_grpc.TokenServiceStub(channel)
            i = 0
            while not self.stop.is_set():
                value = f"under load {i}"
                i += 1
                try:
                    self.acknowledged[_tokenize(stub, self.md, value)] = value
                    self.successes_after[self.mark] = self.successes_after.get(self.mark, 0) + 1
                except grpc.RpcError as exc:
                    self.failures.append(exc.code().name)
                    time.sleep(0.01)


def test_database_restart_under_load_loses_no_acknowledged_token(
    launcher, pg_cluster, pg_database, pg_subject_key_database, tmp_path
):
    vault = launcher.start(
        tmp_path / "data",
        extra_args=[
            "--database-url",
            pg_database,
            "--subject-key-database-url",
            pg_subject_key_database,
        ],
    )
    md = vault.metadata()
    loop = _TokenizeLoop(vault.target, md)
    loop.start()
    try:
        _wait_until(lambda: loop.successes_after.get("", 0) >= 50, "tokenize before restart")
        pg_cluster.stop_server()
        try:
            loop.mark = "down"
            _wait_until(lambda: len(loop.failures) >= 5, "calls fail while the database is down")
        finally:
            pg_cluster.start_server()
        loop.mark = "back"
        _wait_until(lambda: loop.successes_after.get("back", 0) >= 50, "the vault recovers")
    finally:
        loop.stop.set()
        loop.join(30)
    # While down: UNAVAILABLE (fast, retryable), nothing else.
    assert set(loop.failures) == {"UNAVAILABLE"}
    with grpc.insecure_channel(vault.target) as channel:
        stub = pb_grpc.TokenServiceStub(channel)
        for token, value in loop.acknowledged.items():
            assert _reveal(stub, md, token) == value
    stored = pg_cluster.psql(_db(pg_database), "SELECT count(*) FROM tokens")
    assert int(stored) >= len(loop.acknowledged)


def test_workers_share_one_postgres_store(launcher, pg_database, pg_subject_key_database, tmp_path):
    vault = launcher.start(
        tmp_path / "data",
        metrics_listen="",
        extra_args=[
            "--workers",
            "2",
            "--database-url",
            pg_database,
            "--subject-key-database-url",
            pg_subject_key_database,
        ],
    )
    md = vault.metadata()
    tokens: dict[str, str] = {}
    for i in range(20):
        # A channel per call: the kernel spreads connections over the workers.
        with grpc.insecure_channel(vault.target) as channel:
            stub = pb_grpc.TokenServiceStub(channel)
            tokens[_tokenize(stub, md, f"worker value {i}")] = f"worker value {i}"
    for token, value in tokens.items():
        with grpc.insecure_channel(vault.target) as channel:
            assert _reveal(pb_grpc.TokenServiceStub(channel), md, token) == value
    assert vault.terminate() == 0


def test_custodian_shares_then_rotate_master_on_postgres(
    launcher, pg_cluster, pg_database, pg_subject_key_database, tmp_path
):
    """The share facts and the wrapped keys live in PostgreSQL: init --shares records the
    facts once, a sealed server there unseals with them, and rotate-master moves every
    wrapped key to a key file (compare-and-set per key) so a file-KEK server reads on."""
    data = tmp_path / "vault"
    share_dir = tmp_path / "custodians"
    env = {
        "VAULT_KEK_PROVIDER": "shares",
        "VAULT_DATABASE_URL": pg_database,
        "VAULT_SUBJECT_KEY_DATABASE_URL": pg_subject_key_database,
    }
    init = ["keys", "init", "--shares", "2", "--threshold", "2", "--data-dir", data]
    made = run_vaultctl(*init, "--share-dir", share_dir, env=env)
    assert made.returncode == 0, made.stderr
    shares = [f.read_text().strip() for f in sorted(share_dir.iterdir())]
    again = run_vaultctl(*init, "--share-dir", tmp_path / "other", env=env)
    assert "already initialised" in assert_one_line_failure(again)
    both = "\n".join(shares) + "\n"
    custodian = add_caller(data, "custodian", "keys", env, both)
    app = add_caller(data, "checkout", "tokenize,detokenize", env, both)

    vault = launcher.start(data, dev=False, env=env)
    assert health(vault.target) == "NOT_SERVING"
    for share in shares:
        done = unseal(vault.target, custodian, share)
        assert done.returncode == 0, done.stderr
    assert health(vault.target) == "SERVING"
    tokens = tokenize(vault.target, bearer(app), ["split on postgres", "second value"])
    assert vault.terminate() == 0

    rotated = vaultctl_with_stdin(
        both, "keys", "rotate-master", "--to", "file", "--shares-from", "-", "--data-dir", data,
        env=env,
    )  # fmt: skip
    assert rotated.returncode == 0, rotated.stderr
    kek_ids = pg_cluster.psql(
        _db(pg_database),
        "SELECT DISTINCT kek_id FROM key_versions WHERE wrapped_key IS NOT NULL "
        "UNION SELECT kek_id FROM fingerprint_keys UNION SELECT kek_id FROM service_keys",
    ).split()
    assert len(kek_ids) == 1
    assert kek_ids[0].startswith("file:")

    on_file = launcher.start(data, dev=False, env=env | {"VAULT_KEK_PROVIDER": "file"})
    assert health(on_file.target) == "SERVING"
    reveal(on_file.target, bearer(app), tokens)
    verify = run_vaultctl("audit", "verify", "--data-dir", data, "--database-url", pg_database)
    assert verify.returncode == 0, verify.stderr
    assert on_file.terminate() == 0


def test_a_key_file_vault_on_postgres_needs_its_master_key_here(pg_database, tmp_path):
    made = run_vaultctl("keys", "init", "--data-dir", tmp_path / "a", "--database-url", pg_database)
    assert made.returncode == 0, made.stderr
    elsewhere = tmp_path / "b"
    elsewhere.mkdir(mode=0o700)
    result = run_vaultctl("keys", "status", "--data-dir", elsewhere, "--database-url", pg_database)
    assert "no master key in the data dir" in assert_one_line_failure(result)
