"""Subject requests over the use cases' public pieces: export shows the subject's values
and their reveals, a hold blocks erasure, erasure destroys the key and the rows."""

from __future__ import annotations

import pytest
from conftest import ACCESS_REQUEST, EVERYTHING

from vault.domain.model import DataKind
from vault.domain.validation import TokenizeItem
from vault.errors import FailedPreconditionError, InvalidArgumentError, NotFoundError


async def _store_for(vault, subject: str) -> list[str]:
    made = await vault.tokenize.tokenize(
        EVERYTHING,
        [
            TokenizeItem(int(DataKind.EMAIL), "jo@example.com", subject=subject),
            TokenizeItem(int(DataKind.PHONE), "+442071838750", subject=subject),
        ],
        batch=True,
    )
    return [m.token for m in made]


async def test_export_lists_values_and_their_reveals(vault):
    email, phone = await _store_for(vault, "cust-1")
    await _store_for(vault, "cust-2")
    await vault.reveal.detokenize(EVERYTHING, [email], "support call", batch=False)
    export = await vault.subjects.export(EVERYTHING, "cust-1", purpose=ACCESS_REQUEST)
    assert sorted((r.token, r.value) for r in export.records) == sorted(
        [(email, "jo@example.com"), (phone, "+442071838750")]
    )
    assert [(r.token, r.purpose) for r in export.reveals] == [(email, "support call")]
    assert not export.held


async def test_a_hold_blocks_erasure_until_released(vault):
    (email, _) = await _store_for(vault, "cust-1")
    assert await vault.subjects.set_legal_hold(EVERYTHING, "cust-1", hold=True, reason="case 7")
    with pytest.raises(FailedPreconditionError) as held:
        await vault.subjects.erase(EVERYTHING, "cust-1", "gdpr request")
    assert held.value.reason == "LEGAL_HOLD"
    await vault.subjects.set_legal_hold(EVERYTHING, "cust-1", hold=False, reason="closed")
    assert await vault.subjects.erase(EVERYTHING, "cust-1", "gdpr request") == 2
    with pytest.raises(NotFoundError):
        await vault.reveal.detokenize(EVERYTHING, [email], "check", batch=False)
    with pytest.raises(NotFoundError):
        await vault.subjects.export(EVERYTHING, "cust-1", purpose=ACCESS_REQUEST)


async def test_subject_and_reason_are_checked(vault):
    with pytest.raises(InvalidArgumentError):
        await vault.subjects.export(EVERYTHING, "", purpose=ACCESS_REQUEST)
    with pytest.raises(InvalidArgumentError) as bad:
        await vault.subjects.erase(EVERYTHING, "cust-1", " ")
    assert bad.value.reason == "REASON_REQUIRED"
