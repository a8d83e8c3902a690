"""Row codecs and dialects: what the stores write reads back the same."""

from __future__ import annotations

from vault.storage.base import CallerRow, TokenRecord
from vault.storage.sql.codecs import (
    caller_from_row,
    caller_params,
    json_pairs,
    json_strings,
    token_from_row,
    token_params,
    tokens_json,
)
from vault.storage.sql.columns import CALLER_COLUMNS, TOKEN_COLUMNS
from vault.storage.sql.dialect import POSTGRES, SQLITE


def test_token_row_round_trip_also_at_an_offset() -> None:
    record = TokenRecord(
        "tok",
        "shop",
        1,
        2,
        3,
        b"ct",
        b"fp",
        True,  # noqa: FBT003 - TokenRecord is positional in the codec
        b"sub",
        "r1",
        b"h",
        1.5,
        None,
    )
    params = token_params(record)
    assert len(params) == len(TOKEN_COLUMNS.split(","))
    assert token_from_row(params) == record
    assert token_from_row((99, *params), 1) == record
    sqlite_row = (*params[:7], 1, *params[8:])
    assert token_from_row(sqlite_row).deterministic is True


def test_caller_row_round_trip() -> None:
    caller = CallerRow(
        name="checkout", tenant="shop", scopes=("tokenize", "detokenize"), key_id="k1",
        key_hash=b"h" * 32, created_at=1.0, expires_at=None, revoked_at=None,
        cert_identity=None, reveal_kinds=("pan",), reveal_rate=2.5, reveal_burst=10,
    )  # fmt: skip
    params = caller_params(caller)
    assert len(params) == len(CALLER_COLUMNS.split(","))
    assert params[2] == "tokenize,detokenize"
    assert caller_from_row(params) == caller


def test_audit_json_is_read_back_leniently() -> None:
    assert json_strings(tokens_json(("a", "b_2"))) == ("a", "b_2")
    assert json_strings(tokens_json(('we"ird',))) == ('we"ird',)
    assert json_strings(tokens_json(())) == ()
    assert json_strings("not json") == ("not json",)
    assert json_strings('{"a": 1}') == ('{"a": 1}',)
    assert json_pairs('[["k","v"]]') == (("k", "v"),)
    assert json_pairs("x") == (("", "x"),)


def test_placeholders_by_dialect() -> None:
    assert SQLITE.marks(3) == "?,?,?"
    assert POSTGRES.marks(3) == "$1,$2,$3"
    assert POSTGRES.marks(2, start=4) == "$4,$5"
    assert SQLITE.insert("t", "a, b") == "INSERT INTO t (a, b) VALUES (?,?)"
    assert POSTGRES.insert("t", "a, b") == "INSERT INTO t (a, b) VALUES ($1,$2)"
    assert SQLITE.in_list("token", 2) == "token IN (?,?)"
    assert POSTGRES.in_list("token", 2, start=3) == "token = ANY($3)"


def test_upsert_replaces_every_column_but_the_key() -> None:
    assert POSTGRES.upsert("audit_head", "id, seq, mac", "id") == (
        "INSERT INTO audit_head (id, seq, mac) VALUES ($1,$2,$3) "
        "ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, mac = excluded.mac"
    )
