"""An acknowledged token survives the process being killed (SIGKILL, no clean-up at all).

The vault answers a tokenize only after its transaction is durable (DESIGN.md, Storage).
So every token a client got back must detokenize to its value after `kill -9` and a
restart, including tokens acknowledged while other calls were still in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import sqlite3
import string
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from vault.v1 import token_service_pb2 as pb
from vault.v1 import token_service_pb2_grpc as pb_grpc
from vault.v1 import types_pb2

from .support import PURPOSE, revealed_value

pytestmark = pytest.mark.slow

SEED = 20261125
WAVE_ONE = 300  # tokenized and acknowledged before the kill
WAVE_TWO = 120  # called back to back by WORKERS when the kill lands
WORKERS = 16
BATCH_SIZE = 50
READ_CHUNK = 200
CALL_TIMEOUT = 20.0


@dataclass(frozen=True)
class Expected:
    """What a token must reveal: the normalised value, its kind, subject and metadata."""

    kind: int
    value: str | dict[str, Any]
    subject: str
    metadata: dict[str, str]


# -- values, already in normal form so the revealed value must equal them exactly --------


def _luhn_complete(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:  # doubled once the check digit is appended at the right
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return body + str((10 - total % 10) % 10)


def _pan(rng: random.Random) -> str:
    length = rng.choice([13, 15, 16, 16, 16, 19])
    head = rng.choice(["4", "51", "37", "6011", "35"])
    body = head + "".join(rng.choice(string.digits) for _ in range(length - len(head) - 1))
    return _luhn_complete(body)


def _iban(rng: random.Random) -> str:
    bban = "QUOK" + "".join(rng.choice(string.digits) for _ in range(14))
    letters = str.maketrans({chr(c): str(c - 55) for c in range(65, 91)})
    check = 98 - int((bban + "GB00").translate(letters)) % 97
    return f"GB{check:02d}{bban}"


def _word(rng: random.Random, low: int = 4, high: int = 9) -> str:
    return "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(low, high)))


def _address(rng: random.Random) -> dict[str, Any]:
    return {
        "recipient": f"{_word(rng).title()} {_word(rng).title()}",
        "lines": [f"{rng.randint(1, 999)} {_word(rng).title()} Road"]
        + ([f"Flat {rng.randint(1, 99)}"] if rng.random() < 0.5 else []),
        "locality": _word(rng).title(),
        "administrative_area": _word(rng).title() if rng.random() < 0.5 else "",
        "postal_code": f"{rng.choice(string.ascii_uppercase)}{rng.randint(1, 99)} "
        f"{rng.randint(1, 9)}{rng.choice(string.ascii_uppercase)}{rng.choice('ABDEFG')}",
        "region_code": rng.choice(["GB", "US", "DE", "FR", "NL", "JP"]),
    }


_FORMATS = [
    types_pb2.TOKEN_FORMAT_UNSPECIFIED,
    types_pb2.TOKEN_FORMAT_PAN_LAST4,
    types_pb2.TOKEN_FORMAT_PAN_BIN_LAST4,
    types_pb2.TOKEN_FORMAT_RANDOM,
]


def _item(rng: random.Random, i: int) -> tuple[pb.TokenizeRequest, Expected]:
    kind = [
        types_pb2.DATA_KIND_PAN,
        types_pb2.DATA_KIND_CARD_EXPIRY,
        types_pb2.DATA_KIND_CARDHOLDER_NAME,
        types_pb2.DATA_KIND_BANK_ACCOUNT,
        types_pb2.DATA_KIND_BILLING_ADDRESS,
        types_pb2.DATA_KIND_SHIPPING_ADDRESS,
        types_pb2.DATA_KIND_EMAIL,
        types_pb2.DATA_KIND_PHONE,
        types_pb2.DATA_KIND_TEXT,
    ][i % 9]
    req = pb.TokenizeRequest(kind=kind)
    value: str | dict[str, Any]
    if kind == types_pb2.DATA_KIND_PAN:
        value = _pan(rng)
        req.format = _FORMATS[(i // 9) % len(_FORMATS)]
    elif kind == types_pb2.DATA_KIND_CARD_EXPIRY:
        value = f"{rng.randint(1, 12):02d}/{rng.randint(2024, 2045)}"
    elif kind == types_pb2.DATA_KIND_CARDHOLDER_NAME:
        value = f"{_word(rng).title()} {_word(rng).title()}-{_word(rng).title()}"
    elif kind == types_pb2.DATA_KIND_BANK_ACCOUNT:
        value = _iban(rng) if i % 2 else str(rng.randint(10_000_000, 99_999_999))
    elif kind in (types_pb2.DATA_KIND_BILLING_ADDRESS, types_pb2.DATA_KIND_SHIPPING_ADDRESS):
        value = _address(rng)
    elif kind == types_pb2.DATA_KIND_EMAIL:
        value = f"{_word(rng)}.{i}@{_word(rng)}.example"
    elif kind == types_pb2.DATA_KIND_PHONE:
        value = f"+44{rng.randint(1_000_000_000, 7_999_999_999)}"
    else:
        value = f"durability note {i}: {_word(rng)} {_word(rng)}\nsecond line"
    if isinstance(value, dict):
        req.address.CopyFrom(types_pb2.Address(**value))
    else:
        req.text = value
    subject = f"customer-{i % 17}" if i % 3 == 0 else ""
    metadata = {"order": f"o-{i}", "channel": "web"} if i % 4 == 0 else {}
    req.subject = subject
    req.metadata.update(metadata)
    req.deterministic = i % 10 == 0
    if i % 7 == 0:
        req.request_id = f"durability-{SEED}-{i}"
    return req, Expected(kind, value, subject, metadata)


# -- the test ------------------------------------------------------------------------------


class Acknowledged:
    """token -> what it must reveal; a token handed out for two values is a failure."""

    def __init__(self) -> None:
        self.tokens: dict[str, Expected] = {}
        self.deterministic: list[tuple[pb.TokenizeRequest, str]] = []

    def record(self, req: pb.TokenizeRequest, expected: Expected, token: str) -> None:
        previous = self.tokens.setdefault(token, expected)
        assert previous == expected, "one token was handed out for two different values"
        if req.deterministic:
            self.deterministic.append((req, token))


async def _tokenize_wave(
    stub: pb_grpc.TokenServiceStub,
    md: tuple[tuple[str, str], ...],
    items: list[tuple[pb.TokenizeRequest, Expected]],
    acked: Acknowledged,
) -> None:
    """Half the items in BatchTokenize calls, half as unary calls, all concurrently."""
    half = len(items) // 2
    batched, unary = items[:half], items[half:]

    async def batch(chunk: list[tuple[pb.TokenizeRequest, Expected]]) -> None:
        resp = await stub.BatchTokenize(
            pb.BatchTokenizeRequest(requests=[r for r, _ in chunk]),
            metadata=md,
            timeout=CALL_TIMEOUT,
        )
        assert len(resp.responses) == len(chunk)
        for (req, expected), answer in zip(chunk, resp.responses, strict=True):
            acked.record(req, expected, answer.token)

    async def one(req: pb.TokenizeRequest, expected: Expected) -> None:
        resp = await stub.Tokenize(req, metadata=md, timeout=CALL_TIMEOUT)
        acked.record(req, expected, resp.token)

    chunks = [batched[i : i + BATCH_SIZE] for i in range(0, len(batched), BATCH_SIZE)]
    await asyncio.gather(*(batch(c) for c in chunks), *(one(r, e) for r, e in unary))


async def _tokenize_until_killed(
    stub: pb_grpc.TokenServiceStub,
    md: tuple[tuple[str, str], ...],
    items: list[tuple[pb.TokenizeRequest, Expected]],
    acked: Acknowledged,
    kill: Any,
) -> int:
    """Workers call Tokenize back to back; the server is killed after the first few acks.

    Each worker has a call in flight when the kill lands, and stops at its first failure.
    Returns how many were acknowledged; the rest failed with the connection or never ran.
    """
    done = 0
    kill_after = max(1, len(items) // 4)
    queue = iter(items)

    async def worker() -> None:
        nonlocal done
        for req, expected in queue:
            try:
                resp = await stub.Tokenize(req, metadata=md, timeout=CALL_TIMEOUT)
            except grpc.aio.AioRpcError:
                return  # not acknowledged: may or may not exist after the restart
            acked.record(req, expected, resp.token)
            done += 1
            if done == kill_after:
                kill()

    await asyncio.gather(*(worker() for _ in range(WORKERS)))
    return done


async def _reveal_all(
    stub: pb_grpc.TokenServiceStub, md: tuple[tuple[str, str], ...], acked: Acknowledged
) -> list[str]:
    """Every acknowledged token, read back; returns a description of each mismatch."""
    problems: list[str] = []
    tokens = list(acked.tokens)
    for start in range(0, len(tokens), READ_CHUNK):
        chunk = tokens[start : start + READ_CHUNK]
        resp = await stub.BatchDetokenize(
            pb.BatchDetokenizeRequest(tokens=chunk, purpose=PURPOSE),
            metadata=md,
            timeout=CALL_TIMEOUT,
        )
        assert len(resp.responses) == len(chunk)
        for token, got in zip(chunk, resp.responses, strict=True):
            want = acked.tokens[token]
            seen = Expected(got.kind, revealed_value(got), got.subject, dict(got.metadata))
            if got.token != token or seen != want:
                problems.append(f"{token}: expected {want}, revealed {seen}")
    # A sample through the unary method too: it has its own code path.
    for token in tokens[:: max(1, len(tokens) // 25)]:
        got = await stub.Detokenize(
            pb.DetokenizeRequest(token=token, purpose=PURPOSE), metadata=md, timeout=CALL_TIMEOUT
        )
        if revealed_value(got) != acked.tokens[token].value:
            problems.append(f"{token}: unary Detokenize revealed another value")
    return problems


@pytest.mark.asyncio
async def test_acknowledged_tokens_survive_sigkill(launcher, tmp_path):
    data_dir = tmp_path / "data"
    vault = launcher.start(data_dir)
    dev_key_file = data_dir / "dev-api-key"
    key_bytes, key_stat = dev_key_file.read_bytes(), dev_key_file.stat()
    master_bytes = (data_dir / "master.key").read_bytes()
    md = vault.metadata()

    rng = random.Random(SEED)
    items = [_item(rng, i) for i in range(WAVE_ONE + WAVE_TWO)]
    acked = Acknowledged()

    async with grpc.aio.insecure_channel(vault.target) as channel:
        stub = pb_grpc.TokenServiceStub(channel)
        await _tokenize_wave(stub, md, items[:WAVE_ONE], acked)
        assert len(acked.deterministic) > 0
        wave_one_tokens = len(acked.tokens)

        def kill() -> None:
            vault.signal(signal.SIGKILL)

        in_flight_acks = await _tokenize_until_killed(stub, md, items[WAVE_ONE:], acked, kill)
    assert await asyncio.to_thread(vault.wait) == -signal.SIGKILL
    # The kill landed while calls were in flight, not after the last one.
    assert 0 < in_flight_acks < WAVE_TWO
    # Deterministic and idempotent repeats may share tokens; everything else is distinct.
    assert wave_one_tokens >= WAVE_ONE - WAVE_ONE // 10

    restarted = launcher.start(data_dir)
    # --dev on a data dir that has keys: the same keys, no new dev key printed or written.
    assert "dev API key" not in restarted.stdout()
    assert restarted.api_key is not None
    assert restarted.api_key not in restarted.stdout()
    assert dev_key_file.read_bytes() == key_bytes
    after = dev_key_file.stat()
    assert (after.st_ino, after.st_mtime_ns) == (key_stat.st_ino, key_stat.st_mtime_ns)
    assert (data_dir / "master.key").read_bytes() == master_bytes

    async with grpc.aio.insecure_channel(restarted.target) as channel:
        stub = pb_grpc.TokenServiceStub(channel)
        problems = await _reveal_all(stub, restarted.metadata(), acked)
        assert problems == [], f"{len(problems)} acknowledged tokens lost or changed:\n" + (
            "\n".join(problems[:20])
        )
        # The deterministic index survived too: the same value gives the same token.
        for req, token in acked.deterministic[:10]:
            again = await stub.Tokenize(req, metadata=restarted.metadata(), timeout=CALL_TIMEOUT)
            assert (again.token, again.created) == (token, False)

    assert await asyncio.to_thread(restarted.terminate) == 0
    with contextlib.closing(
        sqlite3.connect(f"file:{data_dir / 'vault.db'}?mode=ro", uri=True)
    ) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
