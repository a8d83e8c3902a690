"""Custodian shares (PyCryptodome Shamir over both halves of the 32-byte master key):
any K rebuild it, fewer do not, a mistyped share is refused before combining."""

from __future__ import annotations

import itertools
import pickle

import pytest

from vault.crypto.shares import combine_shares, parse_share, split_master_key
from vault.errors import InvalidArgumentError
from vault.secrets import SecretBytes

KEY = SecretBytes(bytes(range(200, 232)))


@pytest.mark.parametrize(("k", "n"), [(2, 2), (2, 3), (3, 5), (5, 5)])
def test_every_k_subset_rebuilds_the_key(k, n):
    shares = split_master_key(KEY, k, n)
    assert [s.index for s in shares] == list(range(1, n + 1))
    for subset in itertools.combinations(shares, k):
        assert combine_shares(list(subset)) == KEY


def test_fewer_than_k_rebuild_something_else():
    shares = split_master_key(KEY, 3, 5)
    for subset in itertools.combinations(shares, 2):
        assert combine_shares(list(subset)) != KEY


def test_largest_split():
    shares = split_master_key(KEY, 2, 255)
    assert combine_shares([shares[0], shares[254]]) == KEY


@pytest.mark.parametrize(("k", "n"), [(1, 3), (4, 3), (2, 256), (0, 0)])
def test_bad_split_parameters(k, n):
    with pytest.raises(ValueError, match="threshold"):
        split_master_key(KEY, k, n)


def test_share_text_round_trip_and_verifier():
    share = split_master_key(KEY, 2, 3)[1]
    text = share.text()
    assert text.startswith("vault-share-v1:2:")
    parsed = parse_share("  " + text.upper() + "\n")
    assert parsed.index == 2
    assert parsed.value == share.value
    assert parsed.matches(share.verifier())
    assert not split_master_key(KEY, 2, 3)[1].matches(share.verifier())


def share_text_with_one_hex_digit_changed(text: str) -> str:
    head, index, value, check = text.split(":")
    flipped = ("1" if value[10] != "1" else "2").join((value[:10], value[11:]))
    return f"{head}:{index}:{flipped}:{check}"


@pytest.mark.parametrize(
    "mangle",
    [
        share_text_with_one_hex_digit_changed,
        lambda t: t[:-3],  # truncated
        lambda t: t.replace("vault-share-v1", "vault-share-v2"),
        lambda _: "",
        lambda t: t.replace(":2:", ":0:"),
        lambda t: t + "00",
    ],
)
def test_malformed_shares_are_refused_without_echoing(mangle):
    text = mangle(split_master_key(KEY, 2, 3)[1].text())
    with pytest.raises(InvalidArgumentError) as raised:
        parse_share(text)
    assert raised.value.reason == "SHARE_MALFORMED"
    assert [v.field for v in raised.value.violations] == ["share"]
    parts = text.split(":")
    assert all(p not in str(raised.value) for p in parts if len(p) > 8)


def test_a_share_hides_itself():
    share = split_master_key(KEY, 2, 3)[0]
    assert share.value.reveal().hex() not in repr(share)
    with pytest.raises(TypeError):
        pickle.dumps(share)
