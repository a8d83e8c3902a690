"""Describe and delete: GetToken shows the masked value and the tenant-wide fingerprint
(also for a subject's record), DeleteToken removes the row, the purge drops expired
rows unless their subject is held."""

from __future__ import annotations

import pytest
from conftest import EVERYTHING

from vault.domain.model import DataKind
from vault.domain.validation import TokenizeItem
from vault.errors import NotFoundError

PAN = "4242424242424242"


async def test_get_token_masks_and_shows_the_tokenize_fingerprint(vault):
    plain, of_subject = await vault.tokenize.tokenize(
        EVERYTHING,
        [TokenizeItem(int(DataKind.PAN), PAN), TokenizeItem(int(DataKind.PAN), PAN, subject="c")],
        batch=True,
    )
    for made in (plain, of_subject):
        info = await vault.describe.get_token(EVERYTHING, made.token)
        assert (info.masked, info.fingerprint, info.key_version) == (
            "************4242",
            made.fingerprint,
            1,
        )
    assert plain.fingerprint == of_subject.fingerprint


async def test_delete_removes_the_token(env, vault):
    (made,) = await vault.tokenize.tokenize(
        EVERYTHING, [TokenizeItem(int(DataKind.TEXT), "x")], batch=False
    )
    await vault.describe.delete_token(EVERYTHING, made.token)
    assert await env.store.get_tokens([made.token]) == [None]
    with pytest.raises(NotFoundError):
        await vault.describe.delete_token(EVERYTHING, made.token)


async def test_purge_drops_expired_rows_but_not_a_held_subjects(env, vault):
    short, held = await vault.tokenize.tokenize(
        EVERYTHING,
        [
            TokenizeItem(int(DataKind.TEXT), "a", ttl_seconds=10.0),
            TokenizeItem(int(DataKind.TEXT), "b", ttl_seconds=10.0, subject="kept"),
        ],
        batch=True,
    )
    await vault.subjects.set_legal_hold(EVERYTHING, "kept", hold=True, reason="case")
    env.clock.advance(11.0)
    with pytest.raises(NotFoundError):
        await vault.describe.get_token(EVERYTHING, short.token)
    assert (await vault.describe.get_token(EVERYTHING, held.token)).subject == "kept"
    assert await vault.purge_expired() == 1
    assert await env.store.get_tokens([short.token]) == [None]
