"""Helpers shared by the API tests: credentials, rich error details, value builders.

Imported by name (``from api_helpers import ...``): pytest puts this directory on
``sys.path`` because tests are not a package.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from vault.v1 import token_service_pb2 as pb
from vault.v1 import types_pb2

DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "api"
PURPOSE = "api test: order fulfilment"
DOMAIN = "vault"


def load_data(name: str) -> Any:
    return json.loads((DATA_DIR / name).read_text(encoding="utf-8"))


def bearer(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


# -- building requests -------------------------------------------------------------------


def kind_number(name: str) -> int:
    """``"PAN"`` or ``"DATA_KIND_PAN"`` to the proto enum number."""
    full = name if name.startswith("DATA_KIND_") else f"DATA_KIND_{name}"
    return types_pb2.DataKind.Value(full)


def format_number(name: str) -> int:
    full = name if name.startswith("TOKEN_FORMAT_") else f"TOKEN_FORMAT_{name}"
    return types_pb2.TokenFormat.Value(full)


def address(fields: dict[str, Any]) -> types_pb2.Address:
    return types_pb2.Address(**fields)


def tokenize_request(
    kind: str, value: str | dict[str, Any] | None, **extra: Any
) -> pb.TokenizeRequest:
    """A TokenizeRequest; a dict value goes in ``address``, a str in ``text``."""
    req = pb.TokenizeRequest(kind=kind_number(kind), **extra)
    if isinstance(value, dict):
        req.address.CopyFrom(address(value))
    elif value is not None:
        req.text = value
    return req


def address_dict(msg: types_pb2.Address) -> dict[str, Any]:
    return {
        "recipient": msg.recipient,
        "lines": list(msg.lines),
        "locality": msg.locality,
        "administrative_area": msg.administrative_area,
        "postal_code": msg.postal_code,
        "region_code": msg.region_code,
    }


def revealed_value(resp: pb.DetokenizeResponse) -> str | dict[str, Any]:
    which = resp.WhichOneof("value")
    if which == "address":
        return address_dict(resp.address)
    assert which == "text", which
    return resp.text


# -- cards -------------------------------------------------------------------------------


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def luhn_complete(prefix: str) -> str:
    """``prefix`` plus the check digit that makes it Luhn-valid."""
    for check in "0123456789":
        if luhn_valid(prefix + check):
            return prefix + check
    raise AssertionError("unreachable: one check digit always fits")


def random_pan(rng: random.Random, length: int) -> str:
    head = str(rng.randint(1, 9)) + "".join(str(rng.randint(0, 9)) for _ in range(length - 2))
    return luhn_complete(head)


# -- rich errors -------------------------------------------------------------------------


async def rpc_error(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    """The AioRpcError the call ends with; fails the test if it succeeds."""
    try:
        result = await call
    except grpc.aio.AioRpcError as exc:
        return exc
    raise AssertionError(f"expected an RPC error, got a response: {type(result).__name__}")


async def expect_code(call: Awaitable[Any], code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    exc = await rpc_error(call)
    assert exc.code() == code, (exc.code(), exc.details())
    return exc


def _details(exc: grpc.aio.AioRpcError) -> list[Any]:
    status = rpc_status.from_call(exc)
    return [] if status is None else list(status.details)


def error_info(exc: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    for detail in _details(exc):
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    raise AssertionError(f"no ErrorInfo in the status ({exc.code()}: {exc.details()})")


def bad_request(exc: grpc.aio.AioRpcError) -> error_details_pb2.BadRequest:
    for detail in _details(exc):
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            br = error_details_pb2.BadRequest()
            detail.Unpack(br)
            return br
    raise AssertionError(f"no BadRequest in the status ({exc.code()}: {exc.details()})")


def violation_fields(exc: grpc.aio.AioRpcError) -> list[str]:
    return [v.field for v in bad_request(exc).field_violations]


def assert_invalid(exc: grpc.aio.AioRpcError, field: str, reason: str | None = None) -> None:
    """INVALID_ARGUMENT, ErrorInfo in domain vault, and a violation naming ``field``."""
    assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, (exc.code(), exc.details())
    info = error_info(exc)
    assert info.domain == DOMAIN
    assert re.fullmatch(r"[A-Z][A-Z0-9_]*", info.reason), info.reason
    if reason is not None:
        assert info.reason == reason
    fields = violation_fields(exc)
    assert field in fields, fields


def assert_reason(exc: grpc.aio.AioRpcError, reason: str) -> None:
    info = error_info(exc)
    assert info.domain == DOMAIN
    assert info.reason == reason, info.reason


# -- leak checks -------------------------------------------------------------------------


def digit_windows(text: str, width: int = 4) -> set[str]:
    """Every ``width``-digit window of every digit run, with spaces and dashes dropped."""
    windows: set[str] = set()
    for source in (text, re.sub(r"[ \-]", "", text)):
        for run in re.findall(r"[0-9]+", source):
            windows.update(run[i : i + width] for i in range(len(run) - width + 1))
    return windows


def error_texts(exc: grpc.aio.AioRpcError) -> list[str]:
    """Everything human-readable the caller sees: the message and violation descriptions."""
    texts = [exc.details() or ""]
    for detail in _details(exc):
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            br = error_details_pb2.BadRequest()
            detail.Unpack(br)
            texts += [v.description for v in br.field_violations]
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            texts += [info.reason, *info.metadata.keys(), *info.metadata.values()]
    return texts


def submitted_strings(values: Iterable[str]) -> list[str]:
    """Submitted strings worth searching for: those of 4+ characters after stripping."""
    return [v.strip() for v in values if len(v.strip()) >= 4]


def assert_no_leak(texts: Iterable[str], submitted: Iterable[str]) -> None:
    texts = list(texts)
    submitted = list(submitted)
    for value in submitted_strings(submitted):
        for text in texts:
            assert value not in text, "the submitted value appears in the error"
    for window in set().union(*(digit_windows(v) for v in submitted)) if submitted else ():
        for text in texts:
            assert window not in text, "a 4-digit run of the submitted value appears"


# The refusal tallies' default window (vault.audit.refusals.DEFAULT_WINDOW), in seconds.
REFUSAL_WINDOW = 60.0


async def close_refusal_window(
    clock: Any, rows: Callable[[], list[Any]], expected: int
) -> list[Any]:
    """Move the server's clock past the refusal window and wait (real time, at most 5 s)
    until the tallied refusals are written: ``rows()`` has ``expected`` rows."""
    clock.advance(REFUSAL_WINDOW + 1)
    deadline = time.monotonic() + 5.0
    while len(got := rows()) < expected:
        assert time.monotonic() < deadline, got
        await asyncio.sleep(0.05)
    return got
