"""vaultctl as an operator uses it: help, keys, callers, config layers, signals.

API.md: every command has --help, exits non-zero with a one-line reason on failure and
offers --json where its output is data; commands that change state work on the store the
server uses, and a running server picks the change up within seconds.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from vault.v1 import token_service_pb2 as pb
from vault.v1 import token_service_pb2_grpc as pb_grpc
from vault.v1 import types_pb2

from .support import (
    API_KEY,
    PURPOSE,
    VaultProcess,
    assert_one_line_failure,
    bearer,
    error_reason,
    run_vaultctl,
)

pytestmark = pytest.mark.slow

# Commands API.md promises that this build implements; --help discovers the rest.
EXPECTED_COMMANDS = {
    "serve",
    "keys init",
    "keys status",
    "callers add",
    "callers list",
    "callers revoke",
}
ADMIN_SCOPES = "tokenize,detokenize,reveal-masked"
REVOKE_DEADLINE = 3.0
CALL_TIMEOUT = 10.0
SHUTDOWN_GRACE = 5.0
LOAD_BEFORE_SIGNAL = 300
_SUBCOMMANDS = re.compile(r"^positional arguments:\n\s+\{([\w,-]+)\}", re.MULTILINE)


def _text_request(text: str) -> pb.TokenizeRequest:
    return pb.TokenizeRequest(kind=types_pb2.DATA_KIND_TEXT, text=text)


def _serve_expecting_exit(*args: object, env: dict[str, str] | None = None):
    """`vaultctl serve ...` that must exit by itself; a server that starts is a failure."""
    try:
        return run_vaultctl(
            "serve", "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", *args,
            env=env, timeout=15,
        )  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"vaultctl serve started instead of refusing: {exc.stdout!r}")


# -- help ----------------------------------------------------------------------------------


def test_every_command_has_help():
    seen: set[str] = set()
    pending: list[tuple[str, ...]] = [()]
    while pending:
        command = pending.pop()
        result = run_vaultctl(*command, "--help")
        assert result.returncode == 0, (command, result.stderr)
        assert result.stdout.startswith(f"usage: vaultctl {' '.join(command)}".rstrip())
        assert result.stderr == ""
        if command:
            seen.add(" ".join(command))
        found = _SUBCOMMANDS.search(result.stdout)
        pending += [(*command, sub) for sub in found[1].split(",")] if found else []
    leaves = {c for c in seen if not any(o.startswith(c + " ") for o in seen)}
    assert leaves >= EXPECTED_COMMANDS, f"missing: {EXPECTED_COMMANDS - leaves}"


# -- keys and start-up refusals -------------------------------------------------------------


def test_keys_init_creates_a_private_master_key_once(tmp_path):
    data_dir = tmp_path / "data"
    first = run_vaultctl("keys", "init", "--data-dir", data_dir)
    assert first.returncode == 0, first.stderr
    assert "created" in first.stdout
    key_file = data_dir / "master.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    content = key_file.read_bytes()

    second = run_vaultctl("keys", "init", "--data-dir", data_dir)
    assert second.returncode == 0, second.stderr
    assert "already initialised" in second.stdout
    assert key_file.read_bytes() == content

    status = run_vaultctl("keys", "status", "--json", "--data-dir", data_dir)
    assert status.returncode == 0, status.stderr
    versions = json.loads(status.stdout)["versions"]
    assert [(v["version"], v["state"], v["encryptions"]) for v in versions] == [(1, "primary", 0)]


@pytest.mark.parametrize("how", ["keys init", "serve --dev"])
def test_a_new_data_dir_is_private(tmp_path, launcher, how):
    """The data dir holds the master key and the store: only its owner may enter it."""
    data_dir = tmp_path / "data"
    if how == "keys init":
        assert run_vaultctl("keys", "init", "--data-dir", data_dir).returncode == 0
    else:
        assert launcher.start(data_dir).terminate() == 0
    mode = stat.S_IMODE(data_dir.stat().st_mode)
    assert mode == 0o700, f"data dir created with mode {mode:o}"


@pytest.mark.parametrize("exists", [True, False], ids=["empty-dir", "no-dir"])
def test_serve_without_keys_refuses_in_one_line(tmp_path, exists):
    data_dir = tmp_path / "data"
    if exists:
        data_dir.mkdir(mode=0o700)
    result = _serve_expecting_exit("--data-dir", data_dir)
    line = assert_one_line_failure(result)
    assert "keys init" in line
    assert "listening" not in result.stdout
    assert not (data_dir / "master.key").exists()


@pytest.mark.parametrize("dev", [False, True], ids=["serve", "serve-dev"])
def test_serve_refuses_a_group_readable_master_key(tmp_path, dev):
    data_dir = tmp_path / "data"
    assert run_vaultctl("keys", "init", "--data-dir", data_dir).returncode == 0
    data_dir.chmod(0o700)  # a correctly private dir: only the key file is wrong
    key_file = data_dir / "master.key"
    content = key_file.read_bytes()
    key_file.chmod(0o644)
    result = _serve_expecting_exit("--data-dir", data_dir, *(["--dev"] if dev else []))
    line = assert_one_line_failure(result)
    assert "master key" in line
    assert "listening" not in result.stdout
    assert "dev API key" not in result.stdout
    assert key_file.read_bytes() == content
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o644  # reported, not silently "fixed"


# -- callers against a running server (keys init + callers add, no --dev) ----------------


@dataclass
class Deployment:
    data_dir: Path
    vault: VaultProcess
    admin_key: str

    def vaultctl(self, *args: object) -> subprocess.CompletedProcess[str]:
        return run_vaultctl(*args, "--data-dir", self.data_dir)

    def add_caller(self, name: str, scopes: str, tenant: str = "t1") -> str:
        result = self.vaultctl(
            "callers", "add", name, "--tenant", tenant, "--scopes", scopes, "--json"
        )
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)["api_key"]

    def callers(self) -> dict[str, dict[str, object]]:
        result = self.vaultctl("callers", "list", "--json")
        assert result.returncode == 0, result.stderr
        return {c["name"]: c for c in json.loads(result.stdout)["callers"]}

    def encryptions(self) -> int:
        result = self.vaultctl("keys", "status", "--json")
        assert result.returncode == 0, result.stderr
        versions = json.loads(result.stdout)["versions"]
        assert [(v["version"], v["state"]) for v in versions] == [(1, "primary")]
        assert str(versions[0]["kek"]).startswith("file:")
        return int(versions[0]["encryptions"])


@pytest.fixture(scope="module")
def deployment(module_launcher, tmp_path_factory) -> Deployment:
    data_dir = tmp_path_factory.mktemp("deployment") / "data"
    init = run_vaultctl("keys", "init", "--data-dir", data_dir)
    assert init.returncode == 0, init.stderr
    added = run_vaultctl(
        "callers", "add", "ops", "--tenant", "t1", "--scopes", ADMIN_SCOPES, "--json",
        "--data-dir", data_dir,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    vault = module_launcher.start(data_dir, dev=False)
    assert "dev API key" not in vault.stdout()
    assert not (data_dir / "dev-api-key").exists()
    return Deployment(data_dir, vault, json.loads(added.stdout)["api_key"])


@pytest.fixture
def stub(deployment):
    with grpc.insecure_channel(deployment.vault.target) as channel:
        yield pb_grpc.TokenServiceStub(channel)


def test_callers_add_shows_the_key_once_and_list_never(deployment):
    result = deployment.vaultctl(
        "callers", "add", "checkout", "--tenant", "t1", "--scopes", "tokenize", "--json"
    )
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert (printed["name"], printed["tenant"]) == ("checkout", "t1")
    key = printed["api_key"]
    assert API_KEY.fullmatch(key)
    assert result.stdout.count(key) == 1
    assert key not in result.stderr
    secret = key.split("_", 2)[2]

    listed = deployment.vaultctl("callers", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert secret not in listed.stdout
    caller = {c["name"]: c for c in json.loads(listed.stdout)["callers"]}["checkout"]
    assert caller["tenant"] == "t1"
    assert caller["scopes"] == ["tokenize"]
    assert caller["revoked"] is None
    plain = deployment.vaultctl("callers", "list")
    assert plain.returncode == 0
    assert "checkout" in plain.stdout
    assert secret not in plain.stdout
    # Stored only as a hash: the secret half is in no file of the data dir.
    for path in deployment.data_dir.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path.name


def test_a_tokenize_only_caller_can_tokenize_but_not_reveal(deployment, stub):
    md = bearer(deployment.add_caller("tokenizer", "tokenize"))
    token = stub.Tokenize(_text_request("cli scope test"), metadata=md, timeout=CALL_TIMEOUT).token
    calls = {
        "Detokenize own token": lambda: stub.Detokenize(
            pb.DetokenizeRequest(token=token, purpose=PURPOSE), metadata=md
        ),
        # Permission is checked before existence: no probing for tokens.
        "Detokenize unknown token": lambda: stub.Detokenize(
            pb.DetokenizeRequest(token="tok_" + "a" * 32, purpose=PURPOSE), metadata=md
        ),
        "GetToken": lambda: stub.GetToken(pb.GetTokenRequest(token=token), metadata=md),
        "BatchDetokenize": lambda: stub.BatchDetokenize(
            pb.BatchDetokenizeRequest(tokens=[token], purpose=PURPOSE), metadata=md
        ),
    }
    for what, call in calls.items():
        with pytest.raises(grpc.RpcError) as info:
            call()
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED, what
        assert error_reason(info.value) == "MISSING_SCOPE", what
    # The same tenant's admin reads it back: the token is real.
    admin = bearer(deployment.admin_key)
    revealed = stub.Detokenize(pb.DetokenizeRequest(token=token, purpose=PURPOSE), metadata=admin)
    assert revealed.text == "cli scope test"


def test_a_revoked_key_is_refused_by_the_running_server_within_seconds(deployment, stub):
    md = bearer(deployment.add_caller("short-lived", "tokenize"))
    assert stub.Tokenize(_text_request("before revoke"), metadata=md).token

    revoked = deployment.vaultctl("callers", "revoke", "short-lived")
    assert revoked.returncode == 0, revoked.stderr
    assert "revoked" in revoked.stdout
    deadline = time.monotonic() + REVOKE_DEADLINE
    refused: grpc.RpcError | None = None
    while refused is None:
        try:
            stub.Tokenize(_text_request("after revoke"), metadata=md, timeout=CALL_TIMEOUT)
        except grpc.RpcError as err:
            refused = err
        else:
            assert time.monotonic() < deadline, f"key accepted {REVOKE_DEADLINE} s after revoke"
            time.sleep(0.1)
    assert refused.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_reason(refused) == "REVOKED_CREDENTIAL"
    assert deployment.callers()["short-lived"]["revoked"] is not None
    # Others are unaffected.
    assert stub.Tokenize(_text_request("admin"), metadata=bearer(deployment.admin_key)).token

    again = deployment.vaultctl("callers", "revoke", "short-lived")
    assert_one_line_failure(again)
    unknown = deployment.vaultctl("callers", "revoke", "nobody-by-this-name")
    assert_one_line_failure(unknown)


@pytest.mark.parametrize(
    "args",
    [
        ["--scopes", "tokenize,launch-missiles"],
        ["--scopes", ""],
        ["--scopes", " , "],
        ["--scopes", "tokenize", "--expires", "next tuesday"],
    ],
    ids=["unknown-scope", "empty-scopes", "blank-scopes", "bad-expiry"],
)
def test_callers_add_refuses_bad_input_in_one_line(deployment, args, request):
    name = f"bad-{request.node.callspec.id}"
    result = deployment.vaultctl("callers", "add", name, "--tenant", "t1", *args)
    assert_one_line_failure(result)
    assert API_KEY.search(result.stdout + result.stderr) is None
    assert name not in deployment.callers()


def test_callers_add_refuses_a_duplicate_name(deployment):
    deployment.add_caller("twice", "tokenize")
    result = deployment.vaultctl(
        "callers", "add", "twice", "--tenant", "t2", "--scopes", "tokenize"
    )
    assert_one_line_failure(result)
    assert API_KEY.search(result.stdout) is None
    assert deployment.callers()["twice"]["tenant"] == "t1"


def test_keys_status_counts_every_encryption_as_it_commits(deployment, stub):
    md = bearer(deployment.admin_key)
    before = deployment.encryptions()
    for i in range(20):
        stub.Tokenize(_text_request(f"count me {i}"), metadata=md, timeout=CALL_TIMEOUT)
    assert deployment.encryptions() == before + 20
    batch = pb.BatchTokenizeRequest(requests=[_text_request(f"batch {i}") for i in range(10)])
    stub.BatchTokenize(batch, metadata=md, timeout=CALL_TIMEOUT)
    assert deployment.encryptions() == before + 30
    text = deployment.vaultctl("keys", "status")
    assert text.returncode == 0
    assert re.search(
        rf"^v1\tprimary\t.*\t{before + 30} encryptions\t\d+ records$", text.stdout, re.MULTILINE
    )


# -- SIGTERM under load --------------------------------------------------------------------


@pytest.mark.asyncio
async def test_sigterm_under_load_drains_and_keeps_every_acknowledged_token(launcher, tmp_path):
    """Calls in flight at SIGTERM finish; the process exits 0 within the grace period.

    Every call carries a request_id. Acknowledged calls must be readable after a restart;
    failed ones (refused once the drain began) must not have been committed: replayed
    with the same request_id they create their token now, which shows no handler was cut
    off between its commit and its answer.
    """
    config = tmp_path / "vault.toml"
    config.write_text(f"shutdown_grace = {SHUTDOWN_GRACE}\n", encoding="utf-8")
    data_dir = tmp_path / "data"
    vault = launcher.start(data_dir, extra_args=["--config", str(config)])
    md = vault.metadata()
    acked: dict[str, str] = {}  # token -> text
    failed: list[tuple[pb.TokenizeRequest, grpc.StatusCode]] = []
    signal_at: list[float] = []

    def request(text: str) -> pb.TokenizeRequest:
        return pb.TokenizeRequest(kind=types_pb2.DATA_KIND_TEXT, text=text, request_id=text)

    async def unary_worker(stub: pb_grpc.TokenServiceStub, w: int) -> None:
        for n in range(100_000):
            req = request(f"load-{w}-{n}")
            try:
                resp = await stub.Tokenize(req, metadata=md, timeout=CALL_TIMEOUT)
            except grpc.aio.AioRpcError as err:
                failed.append((req, err.code()))
                return
            acked[resp.token] = req.text
            if len(acked) >= LOAD_BEFORE_SIGNAL and not signal_at:
                signal_at.append(time.monotonic())
                vault.signal(signal.SIGTERM)

    async def batch_worker(stub: pb_grpc.TokenServiceStub, w: int) -> None:
        for n in range(100_000):
            reqs = [request(f"batch-{w}-{n}-{i}") for i in range(20)]
            try:
                resp = await stub.BatchTokenize(
                    pb.BatchTokenizeRequest(requests=reqs), metadata=md, timeout=CALL_TIMEOUT
                )
            except grpc.aio.AioRpcError as err:
                failed.extend((r, err.code()) for r in reqs)
                return
            acked.update({a.token: r.text for a, r in zip(resp.responses, reqs, strict=True)})

    async with grpc.aio.insecure_channel(vault.target) as channel:
        stub = pb_grpc.TokenServiceStub(channel)
        await asyncio.gather(
            *(unary_worker(stub, w) for w in range(12)), *(batch_worker(stub, w) for w in range(2))
        )
    exit_code = await asyncio.to_thread(vault.wait, SHUTDOWN_GRACE + 10)
    assert signal_at, "the load never reached the signal"
    took = time.monotonic() - signal_at[0]
    assert exit_code == 0, vault.stderr()
    assert took < SHUTDOWN_GRACE, f"exit took {took:.1f} s, grace is {SHUTDOWN_GRACE} s"
    assert "vault stopped" in vault.stderr()
    # Refused, not broken: UNAVAILABLE once the port closed; CANCELLED for calls that had
    # reached the transport but no handler yet (gRPC core drops those at shutdown).
    codes = {code for _, code in failed}
    assert codes <= {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED}, codes

    restarted = launcher.start(data_dir)
    async with grpc.aio.insecure_channel(restarted.target) as channel:
        stub = pb_grpc.TokenServiceStub(channel)
        rmd = restarted.metadata()
        tokens = list(acked)
        for start in range(0, len(tokens), 500):
            chunk = tokens[start : start + 500]
            resp = await stub.BatchDetokenize(
                pb.BatchDetokenizeRequest(tokens=chunk, purpose=PURPOSE),
                metadata=rmd,
                timeout=CALL_TIMEOUT,
            )
            assert [r.text for r in resp.responses] == [acked[t] for t in chunk]
        committed_unanswered = []
        for req, code in failed:
            again = await stub.Tokenize(req, metadata=rmd, timeout=CALL_TIMEOUT)
            if not again.created:
                committed_unanswered.append((req.text, code.name))
        assert committed_unanswered == []
    assert await asyncio.to_thread(restarted.terminate) == 0


# -- configuration layers ------------------------------------------------------------------


def _is_json_log(stderr: str) -> bool:
    lines = stderr.splitlines()
    assert lines, "the server logged nothing"
    try:
        return all(isinstance(json.loads(line), dict) for line in lines)
    except json.JSONDecodeError:
        return False


def _free_port() -> int:
    """A port nobody listens on now (the layer it is given to is then told by its port)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_config_file_then_environment_then_flags(launcher, tmp_path):
    """Each layer names its own ports and log format; the expected layer's must win."""
    data_dir = tmp_path / "data"
    config = tmp_path / "vault.toml"
    file_port, file_metrics, env_port, env_metrics = (_free_port() for _ in range(4))
    config.write_text(
        f'data_dir = "{data_dir}"\n'
        f'listen = "127.0.0.1:{file_port}"\n'
        f'metrics_listen = "127.0.0.1:{file_metrics}"\n'
        'log_format = "json"\n'
        "dev = true\n",
        encoding="utf-8",
    )
    env = {
        "VAULT_LISTEN": f"127.0.0.1:{env_port}",
        "VAULT_METRICS_LISTEN": f"127.0.0.1:{env_metrics}",
        "VAULT_LOG_FORMAT": "plain",
    }
    flags = {"listen": "127.0.0.1:0", "metrics_listen": "127.0.0.1:0", "log_format": "json"}
    layer_ports = {"file": (file_port, file_metrics), "env": (env_port, env_metrics)}
    cases = [
        # (environment, flags, the layer whose ports must be used, expect JSON logs)
        ({}, {}, "file", True),
        (env, {}, "env", False),
        (env, flags, "flags", True),
    ]
    for case_env, case_flags, layer, json_logs in cases:
        vault = launcher.start(
            data_dir,
            dev=False,  # from the file
            dev_key=True,
            pass_data_dir=False,  # from the file
            listen=case_flags.get("listen"),
            metrics_listen=case_flags.get("metrics_listen"),
            log_format=case_flags.get("log_format"),
            extra_args=["--config", str(config)],
            env=case_env,
            cwd=tmp_path,
        )
        ports = (vault.port, vault.metrics_port)
        if layer == "flags":  # port 0: anything but the other layers' ports
            assert not set(ports) & {file_port, file_metrics, env_port, env_metrics}, layer
        else:
            assert ports == layer_ports[layer], (layer, vault.stdout())
        with grpc.insecure_channel(vault.target) as channel:
            stub = pb_grpc.TokenServiceStub(channel)
            assert stub.Tokenize(_text_request("config"), metadata=vault.metadata()).token
        assert vault.terminate() == 0
        assert _is_json_log(vault.stderr()) == json_logs, (layer, vault.stderr())
    assert not (tmp_path / "var").exists()  # the data dir came from the file every time


@pytest.mark.parametrize(
    ("content", "env"),
    [
        ('colour = "blue"\n', {}),
        ("listen = \n", {}),
        ('shutdown_grace = "soon"\n', {}),
        ("", {"VAULT_SHUTDOWN_GRACE": "soon"}),
        ('log_format = "xml"\n', {}),
        ("key_max_encryptions = 4294967296\n", {}),
        ("", {"VAULT_KEY_MAX_AGE": "-5"}),
    ],
    ids=[
        "unknown-setting",
        "not-toml",
        "wrong-type",
        "env-wrong-type",
        "bad-log-format",
        "key-max-encryptions-over-2^31",
        "negative-key-max-age",
    ],
)
def test_bad_configuration_is_refused_in_one_line(tmp_path, content, env):
    config = tmp_path / "vault.toml"
    config.write_text(content, encoding="utf-8")
    result = _serve_expecting_exit(
        "--config", config, "--data-dir", tmp_path / "data", "--dev", env=env
    )
    assert_one_line_failure(result)
    assert "listening" not in result.stdout


def test_missing_config_file_is_refused_in_one_line(tmp_path):
    result = _serve_expecting_exit("--config", tmp_path / "absent.toml", "--data-dir", tmp_path)
    assert_one_line_failure(result)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "command",
    [
        ("keys", "status", "--json"),
        ("callers", "list", "--json"),
        ("callers", "revoke", "ops"),
        ("callers", "add", "ops", "--tenant", "t1", "--scopes", "tokenize"),
    ],
    ids=["keys-status", "callers-list", "callers-revoke", "callers-add"],
)
def test_a_mistyped_data_dir_is_reported_not_created(tmp_path, command):
    """Reading or changing a vault that is not there says so; it does not make an empty one."""
    missing = tmp_path / "no-such-vault"
    result = run_vaultctl(*command, "--data-dir", missing)
    assert_one_line_failure(result)
    assert not missing.exists(), f"{' '.join(command)} created {sorted(missing.rglob('*'))}"


# -- serve --workers N ----------------------------------------------------------------------


def _group_members(pgid: int) -> list[int]:
    """Live processes in a process group (the vault's own session, see support.py)."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(entry.name))
    return members


def _group_empties(pgid: int, timeout: float = 5.0) -> bool:
    """Whether every process of the group is gone within ``timeout`` seconds (helpers such
    as multiprocessing's resource tracker leave a few milliseconds after their parent)."""
    deadline = time.monotonic() + timeout
    while _group_members(pgid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _refuses_connections(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return False
    except OSError:
        return True


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc (Linux)")
def test_workers_serve_one_store_and_stop_together_on_sigterm(launcher, tmp_path):
    data_dir = tmp_path / "data"
    vault = launcher.start(data_dir, metrics_listen="", extra_args=["--workers", "2"])
    assert len(_group_members(vault.pid)) >= 3  # the supervisor and two workers
    md = vault.metadata()
    written: dict[str, str] = {}
    channels = [grpc.insecure_channel(vault.target) for _ in range(6)]
    try:
        # Several connections: SO_REUSEPORT spreads them over the workers, so tokens
        # written through one worker are read back through the others.
        stubs = [pb_grpc.TokenServiceStub(c) for c in channels]
        for i, stub in enumerate(stubs):
            for n in range(5):
                text = f"worker test {i}/{n}"
                written[stub.Tokenize(_text_request(text), metadata=md).token] = text
        for stub in stubs:
            resp = stub.BatchDetokenize(
                pb.BatchDetokenizeRequest(tokens=list(written), purpose=PURPOSE), metadata=md
            )
            assert [r.text for r in resp.responses] == list(written.values())
    finally:
        for channel in channels:
            channel.close()
    started = time.monotonic()
    assert vault.terminate() == 0
    assert time.monotonic() - started < 10.0  # the default grace
    assert _group_empties(vault.pid), f"still running: {_group_members(vault.pid)}"
    assert _refuses_connections(vault.host, vault.port)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc (Linux)")
def test_workers_do_not_outlive_a_killed_supervisor(launcher, tmp_path):
    """kill -9 of `serve --workers` (OOM killer, operator) must not leave a headless vault
    serving on the port: a restart would then share it with stale workers."""
    vault = launcher.start(tmp_path / "data", metrics_listen="", extra_args=["--workers", "2"])
    vault.signal(signal.SIGKILL)
    assert vault.wait() == -signal.SIGKILL
    assert _group_empties(vault.pid), f"still running: {_group_members(vault.pid)}"
    assert _refuses_connections(vault.host, vault.port)
