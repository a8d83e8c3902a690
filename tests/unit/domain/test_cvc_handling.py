"""CVC handling: held in memory only, revealed once, given back when the reveal is
refused, never corrected, gone with the TTL and with its subject's erasure."""

from __future__ import annotations

import pytest
from conftest import EVERYTHING, TENANT

from vault.auth.policy import ALL_SCOPES, Caller
from vault.domain.model import DataKind
from vault.domain.validation import Limits, TokenizeItem
from vault.errors import FailedPreconditionError, NotFoundError, PermissionDeniedError

PAN_ONLY = Caller("pan-only", TENANT, frozenset(ALL_SCOPES), frozenset({"PAN"}))


async def _cvc(vault, subject: str = "") -> str:
    (made,) = await vault.tokenize.tokenize(
        EVERYTHING, [TokenizeItem(int(DataKind.CVC), "123", subject=subject)], batch=False
    )
    assert (made.fingerprint, made.masked) == ("", "***")
    return made.token


async def test_a_cvc_is_never_stored_and_reveals_once(env, vault):
    token = await _cvc(vault)
    assert await env.store.get_tokens([token]) == [None]
    info = await vault.describe.get_token(EVERYTHING, token)
    assert (info.kind, info.key_version) == (DataKind.CVC, 0)
    (shown,) = await vault.reveal.detokenize(EVERYTHING, [token], "authorise", batch=False)
    assert shown.value == "123"
    with pytest.raises(NotFoundError):
        await vault.reveal.detokenize(EVERYTHING, [token], "authorise", batch=False)


async def test_a_refused_reveal_spends_nothing(vault):
    token = await _cvc(vault)
    with pytest.raises(PermissionDeniedError) as refused:
        await vault.reveal.detokenize(PAN_ONLY, [token], "authorise", batch=False)
    assert refused.value.reason == "KIND_NOT_ALLOWED"
    # A batch that fails on its stored part gives the CVC back.
    with pytest.raises(NotFoundError):
        await vault.reveal.detokenize(
            EVERYTHING, [token, "tok_" + "a" * 32], "authorise", batch=True
        )
    (shown,) = await vault.reveal.detokenize(EVERYTHING, [token], "authorise", batch=False)
    assert shown.value == "123"


async def test_a_cvc_expires_and_is_purged(env):
    vault = env.build(Limits(cvc_ttl_seconds=60.0))
    token = await _cvc(vault)
    env.clock.advance(61.0)
    assert await vault.purge_expired() == 1
    assert len(vault.ephemeral) == 0
    with pytest.raises(NotFoundError):
        await vault.describe.get_token(EVERYTHING, token)


async def test_a_cvc_cannot_be_corrected_and_deletes_from_memory(vault):
    token = await _cvc(vault)
    with pytest.raises(FailedPreconditionError) as refused:
        await vault.corrections.update_token(EVERYTHING, token, "456", None)
    assert refused.value.reason == "CVC_NOT_UPDATABLE"
    await vault.describe.delete_token(EVERYTHING, token)
    assert len(vault.ephemeral) == 0


async def test_erasing_the_subject_drops_its_cvcs(vault):
    await vault.tokenize.tokenize(
        EVERYTHING, [TokenizeItem(int(DataKind.EMAIL), "a@b.example", subject="c-9")], batch=False
    )
    token = await _cvc(vault, subject="c-9")
    assert await vault.subjects.erase(EVERYTHING, "c-9", "gdpr request") == 2
    with pytest.raises(NotFoundError):
        await vault.reveal.detokenize(EVERYTHING, [token], "authorise", batch=False)
