"""Master-key providers with `vaultctl` processes: a real SoftHSM2 token end to end
(init on a key file, serve, tokenize, rotate-master file → HSM, serve on the HSM,
detokenize, and back HSM → file), the HSM's failures as one line each, and custodian
shares (keys init --shares, a sealed `vaultctl serve`, `vaultctl unseal` processes)."""

from __future__ import annotations

import json
import sqlite3
import stat
import subprocess
import uuid
from pathlib import Path

import grpc
import pytest

from vault.v1 import token_service_pb2 as pb
from vault.v1 import token_service_pb2_grpc as pb_grpc
from vault.v1 import types_pb2

from .support import (
    PURPOSE,
    VAULTCTL,
    assert_one_line_failure,
    bearer,
    clean_env,
    error_reason,
    run_vaultctl,
    split_vault,
)

pytestmark = pytest.mark.slow

CALL_TIMEOUT = 10.0
TOKEN_SERVICE = "vault.v1.TokenService"


def vaultctl_with_stdin(stdin: str, *args: object, env=None) -> subprocess.CompletedProcess[str]:
    return run_vaultctl(*args, env=env, stdin=stdin)


def add_caller(data_dir: Path, name: str, scopes: str, env=None, stdin: str | None = None) -> str:
    # The keys scope belongs to the operator tenant only (operator_tenant, default ops).
    tenant = "ops" if "keys" in scopes.split(",") else "t1"
    args = ["callers", "add", name, "--tenant", tenant, "--scopes", scopes, "--json"]
    args += ["--data-dir", str(data_dir)]
    if stdin is not None:
        args += ["--shares-from", "-"]
    result = vaultctl_with_stdin(stdin or "", *args, env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["api_key"]


def tokenize(target: str, md, values: list[str]) -> dict[str, str]:
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.TokenServiceStub(channel)
        resp = stub.BatchTokenize(
            pb.BatchTokenizeRequest(
                requests=[pb.TokenizeRequest(kind=types_pb2.DATA_KIND_TEXT, text=v) for v in values]
            ),
            metadata=md,
            timeout=CALL_TIMEOUT,
        )
    return {r.token: v for r, v in zip(resp.responses, values, strict=True)}


def reveal(target: str, md, tokens: dict[str, str]) -> None:
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.TokenServiceStub(channel)
        resp = stub.BatchDetokenize(
            pb.BatchDetokenizeRequest(tokens=list(tokens), purpose=PURPOSE),
            metadata=md,
            timeout=CALL_TIMEOUT,
        )
    assert [r.text for r in resp.responses] == list(tokens.values())


def status(data_dir: Path, env=None) -> dict[int, dict]:
    result = run_vaultctl("keys", "status", "--json", "--data-dir", data_dir, env=env)
    assert result.returncode == 0, result.stderr
    return {v["version"]: v for v in json.loads(result.stdout)["versions"]}


def kek_ids(data_dir: Path) -> set[str]:
    conn = sqlite3.connect(data_dir / "vault.db", timeout=10)
    try:
        rows = conn.execute(
            "SELECT kek_id FROM key_versions WHERE wrapped_key IS NOT NULL "
            "UNION SELECT kek_id FROM fingerprint_keys UNION SELECT kek_id FROM service_keys"
        ).fetchall()
    finally:
        conn.close()
    return {r[0] for r in rows}


def audit_actions(data_dir: Path) -> list[tuple[str, str, dict]]:
    conn = sqlite3.connect(data_dir / "vault.db", timeout=10)
    try:
        rows = conn.execute("SELECT action, outcome, detail FROM audit_log ORDER BY seq").fetchall()
    finally:
        conn.close()
    return [(a, o, dict(json.loads(d))) for a, o, d in rows]


# -- PKCS#11 (SoftHSM2) -----------------------------------------------------------------


def hsm_env(softhsm, key_label: str, **extra: str) -> dict[str, str]:
    return softhsm.env() | {"VAULT_PKCS11_KEY_LABEL": key_label} | extra


def test_softhsm_end_to_end_file_to_hsm_and_back(tmp_path, launcher, softhsm):
    data_dir = tmp_path / "vault"
    label = f"master-{uuid.uuid4().hex[:8]}"
    hsm = hsm_env(softhsm, label)
    on_hsm = hsm | {"VAULT_KEK_PROVIDER": "pkcs11"}

    # init on a key file, serve, tokenize.
    assert run_vaultctl("keys", "init", "--data-dir", data_dir).returncode == 0
    key = add_caller(data_dir, "checkout", "tokenize,detokenize")
    md = bearer(key)
    vault = launcher.start(data_dir, dev=False)
    tokens = tokenize(vault.target, md, [f"card holder {i}" for i in range(20)])
    file_kek = {v["kek"] for v in status(data_dir).values()}
    assert len(file_kek) == 1
    assert next(iter(file_kek)).startswith("file:")

    # rotate-master file -> HSM while the server keeps serving with the keys it loaded.
    moved = run_vaultctl("keys", "rotate-master", "--to", "pkcs11", "--data-dir", data_dir, env=hsm)
    assert moved.returncode == 0, moved.stderr
    assert "set kek_provider = pkcs11" in moved.stdout
    hsm_id = f"pkcs11:{softhsm.token_label}/{label}"
    assert kek_ids(data_dir) == {hsm_id}
    assert not (data_dir / "master.key").exists()
    [retired] = data_dir.glob("master.key.retired-*")
    assert stat.S_IMODE(retired.stat().st_mode) == 0o600
    reveal(vault.target, md, tokens)
    assert vault.terminate() == 0

    # The old provider no longer starts: one line, non-zero.
    assert_one_line_failure(run_vaultctl("keys", "rotate", "--data-dir", data_dir))

    # Serve on the HSM: every old token detokenizes, new ones tokenize.
    vault = launcher.start(data_dir, dev=False, env=on_hsm)
    reveal(vault.target, md, tokens)
    tokens |= tokenize(vault.target, md, ["under the hsm"])
    reveal(vault.target, md, tokens)
    assert {v["kek"] for v in status(data_dir, env=on_hsm).values()} == {hsm_id}
    verified = run_vaultctl("audit", "verify", "--data-dir", data_dir, env=on_hsm)
    assert verified.returncode == 0, verified.stderr
    rotations = [d for a, _, d in audit_actions(data_dir) if a == "key.rotate_master"]
    assert rotations[-1]["new_kek"] == hsm_id
    assert rotations[-1]["old_keks"] == next(iter(file_kek))
    assert softhsm.pin not in json.dumps(audit_actions(data_dir))
    assert vault.terminate() == 0
    assert softhsm.pin not in vault.stdout() + vault.stderr()

    # And back: HSM -> a new key file.
    back = run_vaultctl("keys", "rotate-master", "--to", "file", "--data-dir", data_dir, env=on_hsm)
    assert back.returncode == 0, back.stderr
    assert "set kek_provider = file" in back.stdout
    [new_file_kek] = kek_ids(data_dir)
    assert new_file_kek.startswith("file:")
    assert new_file_kek not in file_kek
    assert not (data_dir / "master.key.next").exists()
    assert stat.S_IMODE((data_dir / "master.key").stat().st_mode) == 0o600
    vault = launcher.start(data_dir, dev=False)
    reveal(vault.target, md, tokens)
    assert vault.terminate() == 0


def test_keys_init_on_the_hsm_then_serve(tmp_path, launcher, softhsm):
    data_dir = tmp_path / "vault"
    label = f"init-{uuid.uuid4().hex[:8]}"
    env = hsm_env(softhsm, label, VAULT_KEK_PROVIDER="pkcs11")
    made = run_vaultctl("keys", "init", "--kek", "pkcs11", "--data-dir", data_dir, env=env)
    assert made.returncode == 0, made.stderr
    assert not (data_dir / "master.key").exists()
    assert kek_ids(data_dir) == {f"pkcs11:{softhsm.token_label}/{label}"}
    # Again: the key on the token is used, nothing is replaced.
    again = run_vaultctl("keys", "init", "--kek", "pkcs11", "--data-dir", data_dir, env=env)
    assert again.returncode == 0, again.stderr
    assert "already" in again.stdout
    md = bearer(add_caller(data_dir, "checkout", "tokenize,detokenize", env=env))
    vault = launcher.start(data_dir, dev=False, env=env)
    reveal(vault.target, md, tokenize(vault.target, md, ["on the token"]))
    assert vault.terminate() == 0


@pytest.mark.parametrize(
    ("change", "reason_text"),
    [
        ({"VAULT_PKCS11_PIN": "wrong-pin-4321"}, "refused the PIN"),
        ({"VAULT_PKCS11_TOKEN_LABEL": "no-such-token"}, "token"),
        ({"VAULT_PKCS11_MODULE": "/nonexistent/libpkcs11.so"}, "module"),
        ({"VAULT_PKCS11_KEY_LABEL": "no-such-key"}, "not on the HSM"),
        ({"VAULT_PKCS11_PIN": ""}, "PIN"),
    ],
)
def test_hsm_failures_are_one_line_and_change_nothing(
    tmp_path, launcher, softhsm, change, reason_text
):
    data_dir = tmp_path / "vault"
    # A token of its own: wrong PINs are tried on it, never on the shared one.
    token = f"fail-{uuid.uuid4().hex[:8]}"
    softhsm.init_token(token)
    good = hsm_env(softhsm, "master", VAULT_KEK_PROVIDER="pkcs11", VAULT_PKCS11_TOKEN_LABEL=token)
    assert run_vaultctl("keys", "init", "--data-dir", data_dir, env=good).returncode == 0
    before = status(data_dir, env=good)
    bad = good | change
    for args in (["keys", "rotate"], ["keys", "rotate-master", "--to", "file"]):
        line = assert_one_line_failure(run_vaultctl(*args, "--data-dir", data_dir, env=bad))
        assert reason_text in line
        assert softhsm.pin not in line
        assert "wrong-pin-4321" not in line
    assert status(data_dir, env=good) == before
    assert not (data_dir / "master.key.next").exists()
    served = subprocess.run(
        [str(VAULTCTL), "serve", "--data-dir", str(data_dir), "--listen", "127.0.0.1:0"],
        capture_output=True,
        text=True,
        env=clean_env(bad),
        timeout=60,
        check=False,
    )
    line = assert_one_line_failure(served)
    assert reason_text in line


# -- custodian shares --------------------------------------------------------------------


def shares_from(output: str) -> list[str]:
    return [line.rpartition(" ")[2] for line in output.splitlines() if "shown once" in line]


def unseal(target: str, key: str, share: str) -> subprocess.CompletedProcess[str]:
    return vaultctl_with_stdin(share + "\n", "unseal", "--addr", target, env={"VAULT_API_KEY": key})


def health(target: str) -> str:
    result = run_vaultctl("health", "--address", target, "--service", TOKEN_SERVICE)
    return result.stdout.strip()


def test_custodian_shares_end_to_end(tmp_path, launcher):
    data_dir = tmp_path / "vault"
    made = run_vaultctl("keys", "init", "--shares", "3", "--threshold", "2", "--data-dir", data_dir)
    assert made.returncode == 0, made.stderr
    shares = shares_from(made.stdout)
    assert len(shares) == 3
    assert not (data_dir / "master.key").exists()
    env = {"VAULT_KEK_PROVIDER": "shares"}
    two = "\n".join(shares[:2]) + "\n"
    custodian = [add_caller(data_dir, f"custodian-{i}", "keys", env, two) for i in range(3)]
    app = add_caller(data_dir, "checkout", "tokenize,detokenize", env, two)

    vault = launcher.start(data_dir, dev=False, env=env)
    assert health(vault.target) == "NOT_SERVING"
    with grpc.insecure_channel(vault.target) as channel:
        stub = pb_grpc.TokenServiceStub(channel)
        with pytest.raises(grpc.RpcError) as raised:
            stub.Tokenize(
                pb.TokenizeRequest(kind=types_pb2.DATA_KIND_TEXT, text="x"),
                metadata=bearer(app),
                timeout=CALL_TIMEOUT,
            )
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error_reason(raised.value) == "VAULT_SEALED"

    first = unseal(vault.target, custodian[2], shares[2])
    assert first.returncode == 0, first.stderr
    assert "1 of 2; still sealed" in first.stdout
    # K-1 shares: still sealed. A wrong share, or no keys scope: one line, progress kept.
    assert health(vault.target) == "NOT_SERVING"
    mistyped = shares[2][:-1] + ("1" if shares[2][-1] != "1" else "2")
    wrong = unseal(vault.target, custodian[0], mistyped)
    assert "SHARE_MALFORMED" in assert_one_line_failure(wrong)
    assert mistyped.split(":")[2] not in wrong.stdout + wrong.stderr
    denied = unseal(vault.target, app, shares[0])
    assert "MISSING_SCOPE" in assert_one_line_failure(denied)
    assert health(vault.target) == "NOT_SERVING"

    done = unseal(vault.target, custodian[0], shares[0])
    assert done.returncode == 0, done.stderr
    assert "the vault is unsealed" in done.stdout
    assert health(vault.target) == "SERVING"
    tokens = tokenize(vault.target, bearer(app), ["split knowledge"])
    reveal(vault.target, bearer(app), tokens)
    assert vault.terminate() == 0
    for share in shares:
        assert share not in vault.stdout() + vault.stderr()
        assert share.split(":")[2] not in json.dumps(audit_actions(data_dir))
    actions = [(a, o) for a, o, _ in audit_actions(data_dir) if a.startswith("key.unseal")]
    assert actions == [
        ("key.unseal_share", "ok"),
        ("key.unseal_share", "error"),
        ("key.unseal_share", "denied"),
        ("key.unseal_share", "ok"),
        ("key.unseal", "ok"),
    ]


def test_share_files_and_rotating_while_sealed(tmp_path):
    data_dir = tmp_path / "vault"
    share_dir = tmp_path / "custodians"
    made = run_vaultctl(
        "keys", "init", "--shares", "2", "--threshold", "2", "--share-dir", share_dir,
        "--data-dir", data_dir,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    files = sorted(share_dir.iterdir())
    assert [f.name for f in files] == ["share-1.txt", "share-2.txt"]
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
    texts = [f.read_text().strip() for f in files]
    assert all(t not in made.stdout for t in texts)  # written, not printed
    env = {"VAULT_KEK_PROVIDER": "shares"}
    before = status(data_dir, env=env)

    sealed = run_vaultctl("keys", "rotate", "--data-dir", data_dir, env=env)
    assert "the vault is sealed" in assert_one_line_failure(sealed)
    too_few = vaultctl_with_stdin(
        texts[0] + "\n", "keys", "rotate", "--shares-from", "-", "--data-dir", data_dir, env=env
    )
    assert "the vault is sealed" in assert_one_line_failure(too_few)
    assert status(data_dir, env=env) == before

    rotated = vaultctl_with_stdin(
        "\n".join(texts) + "\n",
        "keys", "rotate", "--shares-from", "-", "--data-dir", data_dir,
        env=env,
    )  # fmt: skip
    assert rotated.returncode == 0, rotated.stderr
    assert sorted(status(data_dir, env=env)) == [1, 2]
    assert all(t not in rotated.stdout + rotated.stderr for t in texts)


def test_rotate_master_from_one_hsm_key_to_another(tmp_path, launcher, softhsm):
    data_dir = tmp_path / "vault"
    first, second = (f"{n}-{uuid.uuid4().hex[:8]}" for n in ("first", "second"))
    env = hsm_env(softhsm, first, VAULT_KEK_PROVIDER="pkcs11")
    assert run_vaultctl("keys", "init", "--data-dir", data_dir, env=env).returncode == 0
    md = bearer(add_caller(data_dir, "checkout", "tokenize,detokenize", env=env))
    vault = launcher.start(data_dir, dev=False, env=env)
    tokens = tokenize(vault.target, md, ["one hsm key", "to another"])
    assert vault.terminate() == 0
    moved = run_vaultctl(
        "keys", "rotate-master", "--to", "pkcs11", "--pkcs11-key-label", second,
        "--data-dir", data_dir, env=env,
    )  # fmt: skip
    assert moved.returncode == 0, moved.stderr
    assert f"set pkcs11_key_label = {second}" in moved.stdout
    assert kek_ids(data_dir) == {f"pkcs11:{softhsm.token_label}/{second}"}
    vault = launcher.start(data_dir, dev=False, env=env | {"VAULT_PKCS11_KEY_LABEL": second})
    reveal(vault.target, md, tokens)
    assert vault.terminate() == 0


@pytest.mark.parametrize(
    "args",
    [
        ["--shares", "3", "--threshold", "1"],
        ["--shares", "2", "--threshold", "3"],
        ["--shares", "256", "--threshold", "2"],
        ["--shares", "3"],
        ["--shares", "3", "--threshold", "2", "--kek", "file"],
    ],
)
def test_bad_share_splits_are_one_line_and_create_nothing(tmp_path, args):
    data_dir = tmp_path / "vault"
    line = assert_one_line_failure(run_vaultctl("keys", "init", *args, "--data-dir", data_dir))
    assert "--shares" in line or "--threshold" in line
    assert not (data_dir / "vault.db").exists()


def _callers(data_dir: Path, env) -> dict[str, str | None]:
    listed = run_vaultctl("callers", "list", "--json", "--data-dir", data_dir, env=env)
    assert listed.returncode == 0, listed.stderr
    return {c["name"]: c["revoked"] for c in json.loads(listed.stdout)["callers"]}


def test_caller_changes_of_a_split_vault_need_the_shares_to_be_recorded(tmp_path):
    """Adding a caller is refused, and nothing added, without the shares (its record needs
    the audit key). Revoking goes through even then — a leaked key must stop working when
    no custodian is at hand — and says in one line that the trail could not record it."""
    data_dir = tmp_path / "vault"
    both = "\n".join(split_vault(data_dir, tmp_path / "custodians", 2, 2)) + "\n"
    env = {"VAULT_KEK_PROVIDER": "shares"}

    refused = run_vaultctl(
        "callers", "add", "app", "--tenant", "t1", "--scopes", "tokenize", "--data-dir", data_dir,
        env=env,
    )  # fmt: skip
    assert "the vault is sealed" in assert_one_line_failure(refused)
    assert _callers(data_dir, env) == {}

    add_caller(data_dir, "app", "tokenize", env, both)
    add_caller(data_dir, "ops", "keys", env, both)
    unrecorded = run_vaultctl("callers", "revoke", "app", "--data-dir", data_dir, env=env)
    line = assert_one_line_failure(unrecorded)
    assert "revoked app, but the audit trail could not record it" in line
    recorded = vaultctl_with_stdin(
        both, "callers", "revoke", "ops", "--shares-from", "-", "--data-dir", data_dir, env=env
    )
    assert recorded.returncode == 0, recorded.stderr
    revoked = _callers(data_dir, env)
    assert revoked["app"] is not None
    assert revoked["ops"] is not None
    verify = vaultctl_with_stdin(
        both, "audit", "verify", "--json", "--shares-from", "-", "--data-dir", data_dir, env=env
    )
    assert verify.returncode == 0, verify.stderr
    # two callers added and the recorded revoke; the unrecorded revoke is not in the trail.
    assert json.loads(verify.stdout)["records"] == 3
