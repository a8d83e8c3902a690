"""Helpers of the data-subject API tests: the test subjects' values, stubs, requests."""

from __future__ import annotations

from typing import Any

from api_helpers import load_data, tokenize_request

from vault.v1 import subject_service_pb2 as spb
from vault.v1 import subject_service_pb2_grpc as spb_grpc

SUBJECTS = load_data("subjects.json")
ALICE = "cust-alice-7f3e"
BOB = "cust-bob-19a2"


def subject_stub(vault: Any) -> spb_grpc.SubjectServiceStub:
    return spb_grpc.SubjectServiceStub(vault.channel)


def value_of(entry: dict[str, Any]) -> Any:
    return entry.get("address", entry.get("text"))


def value_texts(entry: dict[str, Any]) -> list[str]:
    """The strings of a value worth scanning for (an address: each field)."""
    if "address" in entry:
        a = entry["address"]
        return [a["recipient"], *a["lines"], a["postal_code"]]
    return [entry["text"]]


async def tokenize_subject(
    vault: Any, entries: list[dict[str, Any]], subject: str, md: Any = None, **extra: Any
) -> dict[str, dict[str, Any]]:
    """Tokenize every entry for ``subject``; token → entry."""
    out = {}
    for entry in entries:
        req = tokenize_request(
            entry["kind"],
            value_of(entry),
            subject=subject,
            metadata=entry.get("metadata", {}),
            **extra,
        )
        resp = await vault.stub.Tokenize(req, metadata=md or vault.md)
        out[resp.token] = entry
    return out


def erase_request(subject: str, reason: str = "GDPR art. 17 request #1") -> spb.EraseSubjectRequest:
    return spb.EraseSubjectRequest(subject=subject, reason=reason)


def hold_request(subject: str, *, hold: bool = True, reason: str = "case 2026-114") -> Any:
    return spb.SetLegalHoldRequest(subject=subject, hold=hold, reason=reason)
