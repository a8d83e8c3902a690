"""Reveal over a real store: purpose and scope first, one reveal policy (kinds and rate)
shared with a subject's export, one audit record per value, another tenant's token
answered like a missing one."""

from __future__ import annotations

import pytest
from conftest import ACCESS_REQUEST, EVERYTHING, TENANT

from vault.audit.base import ACTION_REVEAL
from vault.auth.policy import ALL_SCOPES, Caller
from vault.domain.model import DataKind
from vault.domain.validation import TokenizeItem
from vault.errors import (
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
)

PAN = "4242424242424242"
EMAIL_ONLY = Caller("support", TENANT, frozenset(ALL_SCOPES), frozenset({"EMAIL"}))


async def _tokens(vault, subject: str = "") -> list[str]:
    made = await vault.tokenize.tokenize(
        EVERYTHING,
        [
            TokenizeItem(int(DataKind.PAN), PAN, subject=subject),
            TokenizeItem(int(DataKind.EMAIL), "Jo@Example.COM", subject=subject),
        ],
        batch=True,
    )
    return [m.token for m in made]


async def _reveal_records(env) -> list[tuple[tuple[str, ...], str, str]]:
    rows = await env.store.audit_records(0, 100)
    return [(r.tokens, r.outcome, r.purpose) for r in rows if r.action == ACTION_REVEAL]


async def test_a_batch_reveals_in_order_with_one_record_per_value(env, vault):
    pan, email = await _tokens(vault)
    shown = await vault.reveal.detokenize(EVERYTHING, [email, pan], "refund", batch=True)
    assert [(r.kind, r.value) for r in shown] == [
        (DataKind.EMAIL, "Jo@example.com"),
        (DataKind.PAN, PAN),
    ]
    assert await _reveal_records(env) == [((email,), "ok", "refund"), ((pan,), "ok", "refund")]


async def test_a_forbidden_kind_is_refused_for_detokenize_and_for_export(env, vault):
    pan, email = await _tokens(vault, subject="cust-1")
    (ok,) = await vault.reveal.detokenize(EMAIL_ONLY, [email], "support", batch=False)
    assert ok.value == "Jo@example.com"
    with pytest.raises(PermissionDeniedError) as by_token:
        await vault.reveal.detokenize(EMAIL_ONLY, [email, pan], "support", batch=True)
    assert by_token.value.reason == "KIND_NOT_ALLOWED"
    with pytest.raises(PermissionDeniedError) as by_subject:
        await vault.subjects.export(EMAIL_ONLY, "cust-1", purpose=ACCESS_REQUEST)
    assert by_subject.value.reason == "KIND_NOT_ALLOWED"
    export = await vault.subjects.export(EVERYTHING, "cust-1", purpose=ACCESS_REQUEST)
    assert sorted(r.token for r in export.records) == sorted([pan, email])


async def test_the_reveal_rate_is_shared_by_detokenize_and_export(vault):
    limited = Caller("slow", TENANT, frozenset(ALL_SCOPES), reveal_rate=0.001, reveal_burst=3)
    pan, email = await _tokens(vault, subject="cust-2")
    await vault.reveal.detokenize(limited, [pan], "refund", batch=False)
    # Two values: the burst is spent.
    await vault.subjects.export(limited, "cust-2", purpose=ACCESS_REQUEST)
    with pytest.raises(ResourceExhaustedError):
        await vault.reveal.detokenize(limited, [email], "refund", batch=False)


async def test_purpose_is_required_and_checked_before_lookup(vault):
    with pytest.raises(InvalidArgumentError) as missing:
        await vault.reveal.detokenize(EVERYTHING, ["tok_" + "a" * 32], " ", batch=False)
    assert missing.value.reason == "PURPOSE_REQUIRED"


async def test_another_tenants_token_is_not_found(vault):
    pan, _ = await _tokens(vault)
    stranger = Caller("other", "globex", frozenset(ALL_SCOPES))
    with pytest.raises(NotFoundError) as gone:
        await vault.reveal.detokenize(stranger, [pan], "refund", batch=False)
    assert gone.value.reason == "TOKEN_NOT_FOUND"
