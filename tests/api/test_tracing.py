"""OpenTelemetry tracing with an in-memory exporter: one server span per call (gRPC and
HTTP/JSON) named by method, code, tenant and caller, child spans for store commits and
master-key calls, and no value, token or key anywhere in a span."""

from __future__ import annotations

import base64

import grpc
import httpx
import pytest
from api_helpers import PURPOSE, bearer, tokenize_request
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from vault import tracing
from vault.v1 import key_service_pb2, key_service_pb2_grpc
from vault.v1 import token_service_pb2 as pb

PAN = "4111111111111111"
BAD_PAN = "4111111111111112"
EMAIL = "ada@shop.example"
CALLER_TRACE = 0x4BF92F3577B34DA6A3CE929D0E0E4736
CALLER_SPAN = 0x00F067AA0BA902B7


@pytest.fixture
async def traced(vault_factory):
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.configure(provider)
    try:
        vault = await vault_factory(http_listen="127.0.0.1:0")
        yield vault, exporter
    finally:
        tracing.reset()


def server_spans(exporter: InMemorySpanExporter, method: str) -> list[ReadableSpan]:
    return [
        s
        for s in exporter.get_finished_spans()
        if s.attributes is not None and s.attributes.get("rpc.method") == method
    ]


def children(exporter: InMemorySpanExporter, parent: ReadableSpan) -> list[ReadableSpan]:
    assert parent.context is not None
    return [
        s
        for s in exporter.get_finished_spans()
        if s.parent is not None and s.parent.span_id == parent.context.span_id
    ]


def forbidden_strings(vault, token: str) -> list[str]:
    """Everything no span may carry: values, tokens, the API key and its secret part,
    the master key file's bytes in any usual text form."""
    secret = vault.key.rpartition(".")[2]
    master = (vault.server.config.data_dir / "master.key").read_bytes()
    return [
        PAN,
        BAD_PAN,
        EMAIL,
        token,
        vault.key,
        secret,
        master.hex(),
        base64.b64encode(master).decode(),
    ]


async def test_no_value_token_or_key_reaches_a_span(traced):
    vault, exporter = traced
    resp = await vault.stub.Tokenize(tokenize_request("PAN", PAN), metadata=vault.md)
    token = resp.token
    shown = await vault.stub.Detokenize(
        pb.DetokenizeRequest(token=token, purpose=PURPOSE), metadata=vault.md
    )
    assert shown.text == PAN
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await vault.stub.Tokenize(tokenize_request("PAN", BAD_PAN), metadata=vault.md)
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await vault.stub.Tokenize(
            tokenize_request("EMAIL", EMAIL), metadata=bearer(vault.key + "x")
        )
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    keys = key_service_pb2_grpc.KeyServiceStub(vault.channel)
    await keys.RotateKey(key_service_pb2.RotateKeyRequest(), metadata=vault.md)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{vault.server.http_port}") as c:
        over_http = await c.post(
            "/vault.v1.TokenService/Detokenize",
            json={"token": token, "purpose": PURPOSE},
            headers={
                "authorization": f"Bearer {vault.key}",
                "traceparent": f"00-{CALLER_TRACE:032x}-{CALLER_SPAN:016x}-01",
            },
        )
    assert over_http.json()["text"] == PAN

    spans = exporter.get_finished_spans()
    assert spans
    for span in spans:
        text = span.to_json()
        for forbidden in forbidden_strings(vault, token):
            assert forbidden not in text, (span.name, forbidden[:4])

    tokenize_ok, tokenize_bad, tokenize_refused = server_spans(exporter, "Tokenize")
    assert tokenize_ok.name == "/vault.v1.TokenService/Tokenize"
    assert tokenize_ok.attributes is not None
    assert tokenize_ok.attributes["rpc.grpc.status_code"] == 0
    assert tokenize_ok.attributes["vault.tenant"] == "default"
    assert tokenize_ok.attributes["vault.caller"] == "dev"
    commits = [s for s in children(exporter, tokenize_ok) if s.name == "vault.store.commit"]
    assert "insert_tokens" in {(s.attributes or {}).get("vault.store.operation") for s in commits}
    assert tokenize_bad.attributes is not None
    assert tokenize_bad.attributes["rpc.grpc.status_code"] == 3
    assert tokenize_refused.attributes is not None
    assert tokenize_refused.attributes["rpc.grpc.status_code"] == 16
    assert "vault.caller" not in tokenize_refused.attributes

    (rotate,) = server_spans(exporter, "RotateKey")
    assert "vault.kek.wrap" in {s.name for s in children(exporter, rotate)}

    grpc_reveal, http_reveal = server_spans(exporter, "Detokenize")
    assert grpc_reveal.attributes is not None
    assert grpc_reveal.attributes["rpc.grpc.status_code"] == 0
    assert http_reveal.attributes is not None
    assert http_reveal.attributes["vault.transport"] == "http-json"
    assert http_reveal.attributes["rpc.grpc.status_code"] == 0
    assert http_reveal.attributes["vault.caller"] == "dev"
    # The checkout's trace continues into the vault.
    assert http_reveal.context is not None
    assert http_reveal.context.trace_id == CALLER_TRACE
    assert http_reveal.parent is not None
    assert http_reveal.parent.span_id == CALLER_SPAN


def test_tracing_is_off_by_default(monkeypatch):
    for name in ("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    assert not tracing.configure()
    assert tracing.server_interceptors() == []
    store = object()
    assert tracing.traced_store(store) is store
