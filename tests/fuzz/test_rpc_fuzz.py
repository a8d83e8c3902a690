"""Every RPC of the real server, with random and mutated messages and metadata, and raw
bytes: never a server fault, never a submitted value in an answer, and the store byte for
byte unchanged (but for audit records appended) after any refused call."""

from __future__ import annotations

import asyncio

import grpc
from fuzz_server import Served, assert_unchanged
from hypothesis import given, settings
from hypothesis import strategies as st
from rpc_calls import METHODS, SERVER_FAULTS, Outcome, assert_no_echo, call_raw, strings_in
from strategies import call_metadata, messages, mutated_bytes

from vault.v1 import key_service_pb2, subject_service_pb2, token_service_pb2, types_pb2

_METHOD = st.sampled_from(METHODS)
_MORE = settings(max_examples=settings.default.max_examples * 4)


def _check(served: Served, method: object, body: bytes, md: tuple[tuple[str, str], ...]) -> Outcome:
    before = served.snapshot()
    outcome = call_raw(served.channel, method, body, md)  # type: ignore[arg-type]
    assert outcome.code not in SERVER_FAULTS, (outcome.code, outcome.texts)
    if outcome.code is not grpc.StatusCode.OK:
        assert_unchanged(before, served.snapshot())
    else:
        served.settle()
    return outcome


def _seeds(served: Served) -> dict[str, bytes]:
    """One valid request per method, to mutate: a real token to point at included."""
    tokenize = token_service_pb2.TokenizeRequest(
        kind=types_pb2.DATA_KIND_PAN, text="4242424242424242", subject="cust-1"
    )
    token = served.tokenize(tokenize)
    purpose = "fuzzing the vault"
    valid = [
        tokenize,
        token_service_pb2.BatchTokenizeRequest(requests=[tokenize, tokenize]),
        token_service_pb2.DetokenizeRequest(token=token, purpose=purpose),
        token_service_pb2.BatchDetokenizeRequest(tokens=[token], purpose=purpose),
        token_service_pb2.GetTokenRequest(token=token),
        token_service_pb2.DeleteTokenRequest(token="tok_" + "a" * 32),
        key_service_pb2.GetKeyStatusRequest(),
        key_service_pb2.RetireKeyVersionRequest(version=1),
        subject_service_pb2.ExportSubjectRequest(subject="cust-1", purpose=purpose),
        subject_service_pb2.SetLegalHoldRequest(subject="cust-2", hold=True, reason="r"),
    ]
    by_type = {m.DESCRIPTOR.full_name: m.SerializeToString() for m in valid}
    return {m.full_name: by_type.get(m.input_type.full_name, b"") for m in METHODS}


async def test_random_messages_and_metadata(served: Served) -> None:
    @_MORE
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        method = data.draw(_METHOD)
        message = data.draw(messages(method.input_type))
        md = data.draw(st.one_of(st.just(served.md), call_metadata(served.key)))
        outcome = _check(served, method, message.SerializeToString(), md)
        assert_no_echo(outcome.texts, strings_in(message))

    await asyncio.to_thread(run)


async def test_mutated_and_raw_bytes(served: Served) -> None:
    seeds = await asyncio.to_thread(_seeds, served)

    @_MORE
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        method = data.draw(_METHOD)
        body = data.draw(st.one_of(st.binary(max_size=200), mutated_bytes(seeds[method.full_name])))
        md = data.draw(st.one_of(st.just(served.md), call_metadata(served.key)))
        _check(served, method, body, md)

    await asyncio.to_thread(run)
