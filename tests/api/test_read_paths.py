"""What read paths give away (issue 13 item 2), through a real server on port 0.

- GetToken shows a token's subject and metadata only to a caller that may read them by
  another method (`subjects`, or `detokenize` for the token's kind), never to a caller
  holding `reveal-masked` alone.
- ExportSubject needs a purpose and is audited as a reveal of every token it returns: a
  later export lists those reveals.
- Free text the vault keeps in clear (purposes, reasons, request ids, metadata keys)
  refuses a card number, names the field, never echoes the digits, and the card number
  reaches neither the store nor the audit trail; metadata values are encrypted and may
  hold anything.
- A subject id typed two ways (NFC or not, surrounding spaces) is one subject for
  tokenize, export, erasure and hold.
"""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest
from api_helpers import (
    PURPOSE,
    assert_invalid,
    assert_no_leak,
    error_texts,
    expect_code,
    load_data,
    tokenize_request,
)
from subject_helpers import erase_request, hold_request, subject_stub

from vault.audit.base import ACTION_AUTHENTICATE, ACTION_REVEAL, ACTION_SUBJECT_EXPORT
from vault.v1 import subject_service_pb2 as spb
from vault.v1 import token_service_pb2 as pb

DATA = load_data("read_paths.json")
CARD = DATA["card_numbers"][1]  # "4242 4242 4242 4242", as a person types it
CARD_TEXT = DATA["free_text_with_card"]
VARIANTS = DATA["subject_variants"]
SUBJECT = "cust-readpaths-1"
METADATA = {"order": "o-2002", "channel": "web"}
ACCESS = "GDPR art. 15 request #12"


def _store_bytes(db_path: Path) -> bytes:
    """Every byte the store has on disk (the database file and its WAL)."""
    return b"".join(p.read_bytes() for p in db_path.parent.glob(db_path.name + "*"))


def _assert_not_on_disk(vault, *texts: str) -> None:
    data = _store_bytes(vault.db_path)
    for text in texts:
        for form in {text, text.replace(" ", "").replace("-", "")}:
            assert form.encode() not in data, "a card number reached the store in clear"


async def _tokenize(vault, kind="PAN", value="4111111111111111", **extra):
    req = tokenize_request(kind, value, subject=SUBJECT, metadata=METADATA, **extra)
    return await vault.stub.Tokenize(req, metadata=vault.md)


async def _get(vault, token, md):
    return await vault.stub.GetToken(pb.GetTokenRequest(token=token), metadata=md)


# -- 1. GetToken: subject and metadata only where the policy allows ------------------------


@pytest.mark.parametrize("kind", ["PAN", "CVC"])
async def test_get_token_withholds_subject_and_metadata_from_a_masked_only_caller(vault, kind):
    made = await _tokenize(vault, kind, "4111111111111111" if kind == "PAN" else "739")
    md = await vault.add_caller("support-desk", ("reveal-masked",))
    info = await _get(vault, made.token, md)
    assert info.token == made.token
    assert info.masked == made.masked
    assert info.subject == ""
    assert dict(info.metadata) == {}
    wire = info.SerializeToString()
    assert SUBJECT.encode() not in wire
    assert b"o-2002" not in wire


@pytest.mark.parametrize(
    ("scopes", "policy"),
    [
        (("reveal-masked", "subjects"), {}),
        (("reveal-masked", "detokenize"), {}),
        (("detokenize",), {"reveal_kinds": ("PAN",)}),
    ],
    ids=["subjects", "detokenize", "detokenize-of-the-kind"],
)
async def test_get_token_shows_them_to_a_caller_that_may_read_them(vault, scopes, policy):
    made = await _tokenize(vault)
    md = await vault.add_caller("refund-desk", scopes, **policy)
    info = await _get(vault, made.token, md)
    assert (info.subject, dict(info.metadata)) == (SUBJECT, METADATA)


async def test_get_token_withholds_them_from_a_revealer_of_other_kinds(vault):
    made = await _tokenize(vault)  # a PAN
    md = await vault.add_caller("email-desk", ("detokenize",), reveal_kinds=("EMAIL",))
    info = await _get(vault, made.token, md)
    assert (info.subject, dict(info.metadata), info.masked) == ("", {}, made.masked)


# -- 2. ExportSubject: a purpose, and a reveal of every exported token ---------------------


async def test_export_needs_a_purpose(vault):
    await _tokenize(vault)
    for purpose in ("", "   "):
        exc = await expect_code(
            subject_stub(vault).ExportSubject(
                spb.ExportSubjectRequest(subject=SUBJECT, purpose=purpose), metadata=vault.md
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        assert_invalid(exc, "purpose", "PURPOSE_REQUIRED")
    rows = vault.sql("SELECT outcome FROM audit_log WHERE action = ?", (ACTION_REVEAL,))
    assert rows == []  # a refused export reveals nothing


async def test_an_export_is_in_the_reveal_history_of_every_exported_token(vault):
    tokens = {
        (await _tokenize(vault)).token,
        (await _tokenize(vault, "EMAIL", "ana@example.com")).token,
        (await _tokenize(vault, "CARDHOLDER_NAME", "Ana Nuñez")).token,
    }
    stub = subject_stub(vault)
    md = (*vault.md, ("x-request-id", "export-1"))
    first = await stub.ExportSubject(
        spb.ExportSubjectRequest(subject=SUBJECT, purpose=ACCESS), metadata=md
    )
    assert {r.token for r in first.records} == tokens
    assert list(first.reveals) == []  # nothing was revealed before it
    audited = vault.sql(
        "SELECT tokens, purpose, outcome, request_id FROM audit_log WHERE action = ?",
        (ACTION_REVEAL,),
    )
    assert sorted(t for named, _, _, _ in audited for t in json.loads(named)) == sorted(tokens)
    assert {(p, o, rid) for _, p, o, rid in audited} == {(ACCESS, "ok", "export-1")}

    second = await stub.ExportSubject(
        spb.ExportSubjectRequest(subject=SUBJECT, purpose="GDPR art. 15 follow-up"),
        metadata=vault.md,
    )
    assert {r.token for r in second.reveals} == tokens
    assert {(r.purpose, r.caller, r.request_id) for r in second.reveals} == {
        (ACCESS, "dev", "export-1")
    }


# -- 3. Free text kept in clear refuses a card number --------------------------------------


async def _refused(call, field: str, submitted: str) -> None:
    exc = await expect_code(call, grpc.StatusCode.INVALID_ARGUMENT)
    assert_invalid(exc, field)
    assert_no_leak(error_texts(exc), [submitted, CARD])


async def test_purposes_refuse_a_card_number(vault):
    made = await _tokenize(vault)
    stub = vault.stub
    await _refused(
        stub.Detokenize(
            pb.DetokenizeRequest(token=made.token, purpose=CARD_TEXT), metadata=vault.md
        ),
        "purpose",
        CARD_TEXT,
    )
    await _refused(
        stub.BatchDetokenize(
            pb.BatchDetokenizeRequest(tokens=[made.token], purpose=CARD_TEXT), metadata=vault.md
        ),
        "purpose",
        CARD_TEXT,
    )
    await _refused(
        subject_stub(vault).ExportSubject(
            spb.ExportSubjectRequest(subject=SUBJECT, purpose=CARD_TEXT), metadata=vault.md
        ),
        "purpose",
        CARD_TEXT,
    )
    # The refusals are audited, without the refused text.
    refused = vault.sql(
        "SELECT action, purpose, reason FROM audit_log WHERE outcome != 'ok' ORDER BY seq"
    )
    assert [(a, p) for a, p, _ in refused] == [
        (ACTION_REVEAL, ""),
        (ACTION_REVEAL, ""),
        (ACTION_SUBJECT_EXPORT, ""),
    ]
    assert {r for _, _, r in refused} == {"CARD_NUMBER_IN_TEXT"}
    _assert_not_on_disk(vault, CARD)


async def test_reasons_refuse_a_card_number(vault):
    await _tokenize(vault)
    stub = subject_stub(vault)
    await _refused(
        stub.EraseSubject(erase_request(SUBJECT, CARD_TEXT), metadata=vault.md),
        "reason",
        CARD_TEXT,
    )
    await _refused(
        stub.SetLegalHold(hold_request(SUBJECT, reason=CARD_TEXT), metadata=vault.md),
        "reason",
        CARD_TEXT,
    )
    assert vault.count_tokens() == 1  # nothing erased
    assert vault.sql("SELECT count(*) FROM subject_holds") == [(0,)]
    _assert_not_on_disk(vault, CARD)


@pytest.mark.parametrize("card", DATA["card_numbers"])
async def test_request_ids_and_metadata_keys_refuse_a_card_number(vault, card):
    stub = vault.stub
    request_id = DATA["request_id_with_card"].replace("4242424242424242", card)
    await _refused(
        stub.Tokenize(_plain_request(request_id=request_id), metadata=vault.md),
        "request_id",
        request_id,
    )
    await _refused(
        stub.BatchTokenize(
            pb.BatchTokenizeRequest(requests=[_plain_request(request_id=request_id)]),
            metadata=vault.md,
        ),
        "requests[0].request_id",
        request_id,
    )
    await _refused(
        stub.Tokenize(_plain_request(metadata={card.replace(" ", "-"): "x"}), metadata=vault.md),
        "metadata",
        card,
    )
    assert vault.count_tokens() == 0
    _assert_not_on_disk(vault, card)


async def test_update_token_metadata_keys_refuse_a_card_number(vault):
    made = await vault.stub.Tokenize(_plain_request(), metadata=vault.md)
    key = DATA["metadata_key_with_card"]
    await _refused(
        vault.stub.UpdateToken(
            pb.UpdateTokenRequest(
                token=made.token, text="ana@example.org", metadata={key: "x"}, replace_metadata=True
            ),
            metadata=vault.md,
        ),
        "metadata",
        key,
    )
    _assert_not_on_disk(vault, key)


async def test_an_x_request_id_with_a_card_number_is_refused(vault):
    made = await _tokenize(vault)
    header = DATA["request_id_with_card"]
    md = (*vault.md, ("x-request-id", header))
    await _refused(
        vault.stub.Detokenize(pb.DetokenizeRequest(token=made.token, purpose=PURPOSE), metadata=md),
        "x-request-id",
        header,
    )
    await _refused(
        subject_stub(vault).ExportSubject(
            spb.ExportSubjectRequest(subject=SUBJECT, purpose=ACCESS), metadata=md
        ),
        "x-request-id",
        header,
    )
    assert vault.sql("SELECT count(*) FROM audit_log WHERE action = ?", (ACTION_REVEAL,)) == [(0,)]
    _assert_not_on_disk(vault, header)


async def test_a_refused_credentials_record_gets_a_made_up_id_instead(vault):
    """A call refused before it runs (a bad credential) is recorded anyway: the card
    number in its x-request-id is not, a made-up id stands in."""
    header = DATA["request_id_with_card"]
    md = (("authorization", "Bearer vk_0123456789abcdef_" + "A" * 43), ("x-request-id", header))
    await expect_code(
        vault.stub.GetToken(pb.GetTokenRequest(token="tok_" + "c" * 32), metadata=md),
        grpc.StatusCode.UNAUTHENTICATED,
    )
    ((request_id,),) = vault.sql(
        "SELECT request_id FROM audit_log WHERE action = ?", (ACTION_AUTHENTICATE,)
    )
    assert request_id
    assert request_id != header
    _assert_not_on_disk(vault, header)


async def test_harmless_text_and_card_numbers_in_metadata_values_are_accepted(vault):
    """Metadata values are encrypted with the value: a card number there is not in clear."""
    made = await _tokenize(vault)
    for text in DATA["harmless_free_text"]:
        revealed = await vault.stub.Detokenize(
            pb.DetokenizeRequest(token=made.token, purpose=text),
            metadata=(*vault.md, ("x-request-id", text.replace(" ", "_"))),
        )
        assert revealed.text == "4111111111111111"
    labelled = await vault.stub.Tokenize(
        _plain_request(metadata={"note": CARD}, request_id="r-1"), metadata=vault.md
    )
    info = await _get(vault, labelled.token, vault.md)
    assert info.metadata["note"] == CARD
    _assert_not_on_disk(vault, CARD)


def _plain_request(**extra) -> pb.TokenizeRequest:
    return tokenize_request("EMAIL", "ana@example.com", **extra)


# -- 4. Subject ids: one subject however typed ---------------------------------------------


async def _tokenize_as(vault, subject: str, kind: str, value: str) -> str:
    req = tokenize_request(kind, value, subject=subject)
    return (await vault.stub.Tokenize(req, metadata=vault.md)).token


async def test_variants_of_a_subject_id_are_one_subject(vault):
    nfc, nfd, wide = VARIANTS["nfc"], VARIANTS["nfd_spaced"], VARIANTS["nfc_wide_spaced"]
    assert len({nfc, nfd, wide}) == 3
    tokens = {
        await _tokenize_as(vault, nfd, "EMAIL", "ana@example.com"),
        await _tokenize_as(vault, wide, "PAN", "4111111111111111"),
        await _tokenize_as(vault, nfc, "CARDHOLDER_NAME", "Ana Nuñez"),
    }
    cvc = await _tokenize_as(vault, nfd, "CVC", "739")
    stub = subject_stub(vault)
    for variant in (nfc, nfd, wide):
        export = await stub.ExportSubject(
            spb.ExportSubjectRequest(subject=variant, purpose=ACCESS), metadata=vault.md
        )
        assert {r.token for r in export.records} == tokens
    info = await _get(vault, next(iter(tokens)), vault.md)
    assert info.subject == nfc  # stored in its normal form
    held = await stub.SetLegalHold(hold_request(wide), metadata=vault.md)
    assert held.changed
    released = await stub.SetLegalHold(hold_request(nfd, hold=False), metadata=vault.md)
    assert released.changed
    erased = await stub.EraseSubject(erase_request(wide), metadata=vault.md)
    assert erased.erased_count == len(tokens) + 1  # the CVC in memory went too
    assert vault.count_tokens() == 0
    await expect_code(
        vault.stub.Detokenize(pb.DetokenizeRequest(token=cvc, purpose=PURPOSE), metadata=vault.md),
        grpc.StatusCode.NOT_FOUND,
    )


async def test_a_blank_subject_is_refused_not_dropped(vault):
    exc = await expect_code(
        vault.stub.Tokenize(
            tokenize_request("EMAIL", "ana@example.com", subject=" \u3000 "), metadata=vault.md
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert_invalid(exc, "subject")
    assert vault.count_tokens() == 0
