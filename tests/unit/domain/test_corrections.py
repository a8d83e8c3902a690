"""Corrections: the value of a stored token replaced in place (same token, new
ciphertext and fingerprint), labels kept or replaced, a subject's record kept in its
subject layer, a PAN token's card kept to the digits the token shows, audited."""

from __future__ import annotations

import pytest
from conftest import ACCESS_REQUEST, EVERYTHING, TENANT

from vault.audit.base import ACTION_UPDATE
from vault.auth.policy import Caller
from vault.domain.model import DataKind
from vault.domain.validation import TokenizeItem
from vault.errors import InvalidArgumentError, NotFoundError, PermissionDeniedError

PAN = "4242424242424242"
SAME_SHAPE = "4000000000024242"


async def _one(vault, item: TokenizeItem):
    (made,) = await vault.tokenize.tokenize(EVERYTHING, [item], batch=False)
    return made


async def test_a_correction_keeps_the_token_and_changes_the_value(env, vault):
    made = await _one(
        vault, TokenizeItem(int(DataKind.EMAIL), "old@example.com", metadata={"k": "v"})
    )
    (before,) = await env.store.get_tokens([made.token])
    fixed = await vault.corrections.update_token(EVERYTHING, made.token, "new@example.com", None)
    assert fixed.token == made.token
    assert fixed.fingerprint != made.fingerprint
    (after,) = await env.store.get_tokens([made.token])
    assert before is not None
    assert after is not None
    assert after.ciphertext != before.ciphertext
    (shown,) = await vault.reveal.detokenize(EVERYTHING, [made.token], "check", batch=False)
    assert (shown.value, shown.metadata) == ("new@example.com", {"k": "v"})
    await vault.corrections.update_token(EVERYTHING, made.token, "new@example.com", {})
    info = await vault.describe.get_token(EVERYTHING, made.token)
    assert info.metadata == {}
    rows = await env.store.audit_records(0, 100)
    assert [r.tokens for r in rows if r.action == ACTION_UPDATE] == [(made.token,)] * 2


async def test_a_subjects_record_stays_in_its_subject_layer(vault):
    made = await _one(vault, TokenizeItem(int(DataKind.TEXT), "note", subject="cust-3"))
    await vault.corrections.update_token(EVERYTHING, made.token, "fixed note", None)
    export = await vault.subjects.export(EVERYTHING, "cust-3", purpose=ACCESS_REQUEST)
    assert [r.value for r in export.records] == ["fixed note"]
    await vault.subjects.erase(EVERYTHING, "cust-3", "gdpr request")
    with pytest.raises(NotFoundError):
        await vault.reveal.detokenize(EVERYTHING, [made.token], "check", batch=False)


async def test_a_pan_correction_must_match_the_token(vault):
    made = await _one(vault, TokenizeItem(int(DataKind.PAN), PAN))
    await vault.corrections.update_token(EVERYTHING, made.token, SAME_SHAPE, None)
    (shown,) = await vault.reveal.detokenize(EVERYTHING, [made.token], "check", batch=False)
    assert shown.value == SAME_SHAPE
    with pytest.raises(InvalidArgumentError) as bad:
        await vault.corrections.update_token(EVERYTHING, made.token, "4000056655665556", None)
    assert bad.value.reason == "TOKEN_SHAPE_MISMATCH"


async def test_a_correction_needs_the_tokenize_scope_and_the_tenant(vault):
    made = await _one(vault, TokenizeItem(int(DataKind.TEXT), "note"))
    reader = Caller("reader", TENANT, frozenset({"detokenize"}))
    with pytest.raises(PermissionDeniedError):
        await vault.corrections.update_token(reader, made.token, "x", None)
    stranger = Caller("other", "globex", EVERYTHING.scopes)
    with pytest.raises(NotFoundError):
        await vault.corrections.update_token(stranger, made.token, "x", None)
