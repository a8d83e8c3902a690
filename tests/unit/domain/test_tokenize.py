"""Tokenize over a real SQLite store: values round-trip, the PAN token generator is
injected (so a tiny token space is exhausted in a few calls), deterministic and
idempotent calls return the token they made, and a batch is all or nothing."""

from __future__ import annotations

import itertools

import pytest
from conftest import EVERYTHING, TENANT

from vault.auth.policy import SCOPE_TOKENIZE, Caller
from vault.domain import kinds
from vault.domain.model import DataKind, TokenFormat
from vault.domain.validation import Limits, TokenizeItem
from vault.errors import InvalidArgumentError, PermissionDeniedError, ResourceExhaustedError

PAN = "4242424242424242"
OTHER_PAN = "4000000000024242"  # same length and last four as PAN


def pan_item(pan: str = PAN, **kw: object) -> TokenizeItem:
    return TokenizeItem(int(DataKind.PAN), pan, **kw)  # type: ignore[arg-type]


def tiny_space(middles: list[int]):
    """A PAN token generator drawing the free digits from ``middles`` in turn."""
    draws = itertools.cycle(middles)
    calls: list[str] = []

    def generate(pan: str, fmt: TokenFormat) -> str:
        token = kinds.new_pan_token(pan, fmt, lambda _bound: next(draws))
        calls.append(token)
        return token

    return generate, calls


async def test_a_pan_token_keeps_last_four_fails_luhn_and_reveals_the_pan(vault):
    (made,) = await vault.tokenize.tokenize(EVERYTHING, [pan_item()], batch=False)
    assert made.created
    assert made.token[-4:] == PAN[-4:]
    assert len(made.token) == len(PAN)
    assert not kinds.luhn_valid(made.token)
    assert made.masked == "************4242"
    (shown,) = await vault.reveal.detokenize(EVERYTHING, [made.token], "refund", batch=False)
    assert shown.value == PAN


async def test_an_exhausted_token_space_is_refused_and_stored_tokens_stay(env):
    generate, calls = tiny_space([0])  # a space of one token
    vault = env.build(Limits(max_token_attempts=4), new_pan_token=generate)
    (first,) = await vault.tokenize.tokenize(EVERYTHING, [pan_item()], batch=False)
    with pytest.raises(ResourceExhaustedError) as refused:
        await vault.tokenize.tokenize(EVERYTHING, [pan_item(OTHER_PAN)], batch=False)
    assert refused.value.reason == "TOKEN_SPACE_EXHAUSTED"
    # One draw for the first value; the second drew once and redrew after each of its
    # four inserts found the token taken.
    assert len(calls) == 1 + 1 + 4
    assert set(calls) == {first.token}
    (shown,) = await vault.reveal.detokenize(EVERYTHING, [first.token], "refund", batch=False)
    assert shown.value == PAN


async def test_a_taken_token_is_redrawn(env):
    generate, calls = tiny_space([0, 0, 2])
    vault = env.build(new_pan_token=generate)
    (first,) = await vault.tokenize.tokenize(EVERYTHING, [pan_item()], batch=False)
    (second,) = await vault.tokenize.tokenize(EVERYTHING, [pan_item(OTHER_PAN)], batch=False)
    assert len(calls) == 3  # the second value's first draw was taken
    assert first.token != second.token
    shown = await vault.reveal.detokenize(
        EVERYTHING, [first.token, second.token], "refund", batch=True
    )
    assert [r.value for r in shown] == [PAN, OTHER_PAN]


async def test_deterministic_and_idempotent_calls_return_the_first_token(vault):
    (a,) = await vault.tokenize.tokenize(EVERYTHING, [pan_item(deterministic=True)], batch=False)
    (b,) = await vault.tokenize.tokenize(EVERYTHING, [pan_item(deterministic=True)], batch=False)
    assert (a.token, a.created, b.created) == (b.token, True, False)
    (c,) = await vault.tokenize.tokenize(EVERYTHING, [pan_item(request_id="r-1")], batch=False)
    (d,) = await vault.tokenize.tokenize(EVERYTHING, [pan_item(request_id="r-1")], batch=False)
    assert (c.token, d.created) == (d.token, False)
    with pytest.raises(InvalidArgumentError) as reused:
        await vault.tokenize.tokenize(
            EVERYTHING, [pan_item(OTHER_PAN, request_id="r-1")], batch=False
        )
    assert reused.value.reason == "REQUEST_ID_REUSED"


async def test_a_batch_with_one_bad_item_stores_nothing(env, vault):
    items = [pan_item(), TokenizeItem(int(DataKind.EMAIL), "not an email")]
    with pytest.raises(InvalidArgumentError) as bad:
        await vault.tokenize.tokenize(EVERYTHING, items, batch=True)
    assert [v.field for v in bad.value.violations] == ["requests[1].text"]
    assert await env.store.records_by_key_version() in ({}, {1: 0})


async def test_tokenize_needs_its_scope_before_anything_is_checked(vault):
    reader = Caller("reader", TENANT, frozenset({"detokenize"}))
    assert SCOPE_TOKENIZE not in reader.scopes
    with pytest.raises(PermissionDeniedError):
        await vault.tokenize.tokenize(reader, [TokenizeItem(0, None)], batch=False)
