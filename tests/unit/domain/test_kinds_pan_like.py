"""contains_pan_like: the rule that keeps card numbers out of free text stored in clear."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vault.domain.kinds import contains_pan_like, luhn_valid

CASES = json.loads(
    (Path(__file__).parents[2] / "data" / "kinds" / "pan_like.json").read_text(encoding="utf-8")
)


@pytest.mark.parametrize("text", CASES["pan_like"])
def test_pan_like_text_is_found(text: str) -> None:
    assert contains_pan_like(text)


@pytest.mark.parametrize("text", CASES["not_pan_like"])
def test_other_text_is_not(text: str) -> None:
    assert not contains_pan_like(text)


@pytest.mark.parametrize("length", range(12, 20))
def test_every_pan_length_in_any_position(length: int) -> None:
    body = "4" * (length - 1)
    pan = next(body + d for d in "0123456789" if luhn_valid(body + d))
    for text in (pan, f"ref {pan}", f"{pan} ok", f"a{pan}b"):
        assert contains_pan_like(text)
    assert not contains_pan_like(pan[:-1] + str((int(pan[-1]) + 1) % 10))
