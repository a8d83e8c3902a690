"""`vault_audit_write_failures_total` as Prometheus scrapes it from a real server: one per
failed audit append, whether the append belonged to a reveal (refused, fail closed) or to
a refused credential; appends that succeed do not count."""

from __future__ import annotations

import asyncio
import urllib.request

import grpc
from api_helpers import PURPOSE, assert_reason, expect_code, tokenize_request
from prometheus_client.parser import text_string_to_metric_families

from vault.errors import StoreUnavailableError
from vault.v1 import token_service_pb2 as pb

PAN = "4111111111111111"
FAILURES = "vault_audit_write_failures_total"


async def _failures(port: int) -> float:
    def get() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            return r.read().decode()

    body = await asyncio.to_thread(get)
    [value] = [
        s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
        if s.name == FAILURES
    ]
    return value


async def test_each_failed_audit_append_is_counted(vault_factory, monkeypatch):
    vault = await vault_factory(metrics_listen="127.0.0.1:0")
    port = vault.server.metrics_port
    token = (await vault.stub.Tokenize(tokenize_request("PAN", PAN), metadata=vault.md)).token
    # The counter is process-wide (other tests in this process moved it): deltas only.
    start = await _failures(port)
    await vault.stub.Detokenize(
        pb.DetokenizeRequest(token=token, purpose=PURPOSE), metadata=vault.md
    )
    assert await _failures(port) == start, "a durable audit record is not a failure"

    async def unavailable(rows, seal):
        raise StoreUnavailableError("the store could not commit")

    monkeypatch.setattr(vault.server.store, "append_audit", unavailable)
    exc = await expect_code(
        vault.stub.Detokenize(
            pb.DetokenizeRequest(token=token, purpose=PURPOSE), metadata=vault.md
        ),
        grpc.StatusCode.UNAVAILABLE,
    )
    assert_reason(exc, "AUDIT_UNAVAILABLE")
    assert await _failures(port) == start + 1

    await expect_code(
        vault.stub.BatchDetokenize(
            pb.BatchDetokenizeRequest(tokens=[token, token], purpose=PURPOSE),
            metadata=vault.md,
        ),
        grpc.StatusCode.UNAVAILABLE,
    )
    assert await _failures(port) == start + 2, "one append per call, however many tokens"

    # A refused credential is still refused when its record cannot be written.
    await expect_code(
        vault.stub.Detokenize(pb.DetokenizeRequest(token=token, purpose=PURPOSE)),
        grpc.StatusCode.UNAUTHENTICATED,
    )
    assert await _failures(port) == start + 3

    monkeypatch.undo()
    await vault.stub.Detokenize(
        pb.DetokenizeRequest(token=token, purpose=PURPOSE), metadata=vault.md
    )
    assert await _failures(port) == start + 3
