"""Inputs the campaign found failing (tests/data/fuzz/regressions.json), replayed against
a real server: the expected code, and the store unchanged after the refusal."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import grpc
import pytest
from fuzz_server import Served, assert_unchanged
from rpc_calls import METHODS, call_raw, path

from vault.auth.apikeys import hash_secret, mint_api_key
from vault.auth.policy import ALL_SCOPES
from vault.storage.base import CallerRow

CASES = json.loads(
    (Path(__file__).parents[1] / "data" / "fuzz" / "regressions.json").read_text(encoding="utf-8")
)["cases"]
_BY_PATH = {path(m): m for m in METHODS}


async def _fresh_tenant_md(served: Served) -> tuple[tuple[str, str], ...]:
    """A caller with every scope, of a tenant that has made no call yet."""
    key = mint_api_key()
    await served.server.store.add_caller(
        CallerRow(
            name="fresh",
            tenant="fresh-tenant",
            scopes=ALL_SCOPES,
            key_id=key.key_id,
            key_hash=hash_secret(key.secret),
            created_at=served.clock.now(),
            expires_at=None,
            revoked_at=None,
        )
    )
    return (("authorization", f"Bearer {key.text}"),)


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(
            c,
            id=c["name"],
            marks=[pytest.mark.xfail(strict=True, reason=c["known_defect"])]
            if "known_defect" in c
            else [],
        )
        for c in CASES
    ],
)
async def test_regression(served: Served, case: dict[str, object]) -> None:
    md = await _fresh_tenant_md(served) if case["fresh_tenant"] else served.md
    method = _BY_PATH[str(case["method"])]
    body = bytes.fromhex(str(case["request_hex"]))
    before = await asyncio.to_thread(served.snapshot)
    outcome = await asyncio.to_thread(call_raw, served.channel, method, body, md)
    assert outcome.code == getattr(grpc.StatusCode, str(case["code"]))
    assert_unchanged(before, await asyncio.to_thread(served.snapshot))
