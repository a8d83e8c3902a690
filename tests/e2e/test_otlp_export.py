"""`vaultctl serve` with the usual OTEL_* settings exports its spans over OTLP/gRPC (to a
real OTLP trace collector in this test), and nothing it exports holds a value, token or
key; without them nothing is exported."""

from __future__ import annotations

import threading
import time
from concurrent import futures

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from vault.v1 import token_service_pb2 as pb
from vault.v1 import token_service_pb2_grpc

from .support import bearer

pytestmark = pytest.mark.slow

PAN = "4242424242424242"


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self.lock = threading.Lock()

    def Export(self, request, _context):  # noqa: N802 - the proto's name
        with self.lock:
            self.requests.append(request)
        return trace_service_pb2.ExportTraceServiceResponse()

    def span_names(self) -> set[str]:
        with self.lock:
            return {
                span.name
                for req in self.requests
                for rs in req.resource_spans
                for ss in rs.scope_spans
                for span in ss.spans
            }


@pytest.fixture
def collector():
    servicer = Collector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, port
    server.stop(None)


def _round_trip(vault) -> str:
    with grpc.insecure_channel(vault.target) as channel:
        stub = token_service_pb2_grpc.TokenServiceStub(channel)
        md = bearer(vault.api_key)
        token = stub.Tokenize(pb.TokenizeRequest(kind=1, text=PAN), metadata=md).token
        shown = stub.Detokenize(pb.DetokenizeRequest(token=token, purpose="refund"), metadata=md)
        assert shown.text == PAN
    return token


def test_otel_settings_export_spans_without_values(launcher, tmp_path, collector):
    servicer, port = collector
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_SERVICE_NAME": "vault-under-test",
    }
    vault = launcher.start(tmp_path / "data", env=env)
    token = _round_trip(vault)
    deadline = time.monotonic() + 15
    wanted = {"/vault.v1.TokenService/Tokenize", "/vault.v1.TokenService/Detokenize"}
    while not wanted <= servicer.span_names():
        assert time.monotonic() < deadline, servicer.span_names()
        time.sleep(0.1)
    assert "vault.store.commit" in servicer.span_names()
    exported = b"".join(r.SerializeToString() for r in servicer.requests)
    assert b"vault-under-test" in exported
    for forbidden in (PAN, token, vault.api_key, vault.api_key.rpartition("_")[2]):
        assert forbidden.encode() not in exported
    assert vault.terminate() == 0


def test_without_otel_settings_nothing_is_exported(launcher, tmp_path, collector, monkeypatch):
    servicer, _port = collector
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_TRACES_EXPORTER"):
        monkeypatch.delenv(name, raising=False)
    vault = launcher.start(tmp_path / "data", env={"OTEL_BSP_SCHEDULE_DELAY": "100"})
    _round_trip(vault)
    time.sleep(0.5)
    assert vault.terminate() == 0
    assert servicer.requests == []
