"""`vaultctl callers add` reveal-policy options, as a process."""

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


@pytest.mark.parametrize(
    "flags",
    [
        ["--reveal-kinds", "PAN,CARD_NUMBER"],
        ["--reveal-rate", "-1"],
        ["--reveal-burst", "-3"],
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
