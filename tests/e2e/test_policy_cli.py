"""`vaultctl callers add` reveal-policy and tokenize-budget options, as a process."""

from __future__ import annotations

import json

import pytest

from .support import assert_one_line_failure, run_vaultctl

pytestmark = pytest.mark.slow


@pytest.fixture
def data_dir(tmp_path):
    result = run_vaultctl("keys", "init", "--data-dir", tmp_path / "data")
    assert result.returncode == 0, result.stderr
    return tmp_path / "data"


def test_reveal_policy_is_stored_and_listed(data_dir):
    added = run_vaultctl(
        "callers", "add", "support", "--tenant", "shop1", "--scopes", "detokenize",
        "--reveal-kinds", "email,DATA_KIND_PHONE", "--reveal-rate", "2.5", "--reveal-burst", "5",
        "--data-dir", data_dir, "--json",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    listed = run_vaultctl("callers", "list", "--json", "--data-dir", data_dir)
    [caller] = json.loads(listed.stdout)["callers"]
    assert caller["reveal_kinds"] == ["EMAIL", "PHONE"]
    assert caller["reveal_rate"] == 2.5
    assert caller["reveal_burst"] == 5


def test_tokenize_budget_is_stored_and_listed(data_dir):
    for name, flags in (
        ("checkout", []),
        ("import", ["--tokenize-rate", "2000", "--tokenize-burst", "5000"]),
    ):
        added = run_vaultctl(
            "callers", "add", name, "--tenant", "shop1",
            "--scopes", "tokenize,fingerprint,tokenize-deterministic", *flags,
            "--data-dir", data_dir, "--json",
        )  # fmt: skip
        assert added.returncode == 0, added.stderr
    listed = run_vaultctl("callers", "list", "--json", "--data-dir", data_dir)
    found = {c["name"]: c for c in json.loads(listed.stdout)["callers"]}
    # No flag: the server's configured default (None); a flag: the caller's own.
    assert (found["checkout"]["tokenize_rate"], found["checkout"]["tokenize_burst"]) == (
        None,
        None,
    )
    assert (found["import"]["tokenize_rate"], found["import"]["tokenize_burst"]) == (2000, 5000)
    assert found["import"]["scopes"] == ["tokenize", "fingerprint", "tokenize-deterministic"]


@pytest.mark.parametrize(
    "flags",
    [
        ["--reveal-kinds", "PAN,CARD_NUMBER"],
        ["--reveal-rate", "-1"],
        ["--reveal-burst", "-3"],
        ["--tokenize-rate", "-1"],
        ["--tokenize-burst", "0"],
    ],
)
def test_bad_reveal_policy_is_one_line_and_adds_nothing(data_dir, flags):
    result = run_vaultctl(
        "callers", "add", "bad", "--tenant", "t", "--scopes", "detokenize", *flags,
        "--data-dir", data_dir,
    )  # fmt: skip
    assert_one_line_failure(result)
    listed = run_vaultctl("callers", "list", "--json", "--data-dir", data_dir)
    assert json.loads(listed.stdout)["callers"] == []
