"""Forward against a local processor that answers at once, next to Detokenize unary, in
one run of one vault: ``forward_bench.py --duration S --concurrency C`` prints one JSON
line ``{"rows": [detokenize_unary, forward_unary]}``, each shaped like loadgen.py's.

The vault (``VaultServer``, dev mode, a fresh data dir) and the gRPC client share this
process, so both rows pay the same client costs; the processor (a minimal HTTP/1.1
server over TLS, with its own test CA made here with ``cryptography``) runs in another.
The difference between them is what a forward adds: the route check, the template
substitution and an HTTPS round trip on a kept-alive connection.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import ipaddress
import json
import multiprocessing
import ssl
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from workload import PURPOSE, percentiles_ms

from vault.config import Config
from vault.forward.routes import RouteAdministration, RouteSecrets, RouteSpec
from vault.server import VaultServer
from vault.v1 import forward_service_pb2 as fpb
from vault.v1 import forward_service_pb2_grpc, token_service_pb2_grpc
from vault.v1 import token_service_pb2 as pb

PAN = "4242424242424242"
_ANSWER = (
    b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"ok":true}'
)


def _certs(work: Path) -> tuple[bytes, Path, Path]:
    """A CA (PEM) and a server certificate for 127.0.0.1 of it (files)."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench processor CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    cert_path, key_path = work / "processor.crt", work / "processor.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ca.public_bytes(serialization.Encoding.PEM), cert_path, key_path


class _Answering(asyncio.Protocol):
    """Answers every request at once (keep-alive, bodies by Content-Length)."""

    def __init__(self) -> None:
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head = self.buffer[:end].lower()
            length = 0
            for line in head.split(b"\r\n"):
                if line.startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length :]
            assert self.transport is not None
            self.transport.write(_ANSWER)


def _serve(cert: Path, key: Path, ports: multiprocessing.Queue[int]) -> None:
    loop = asyncio.new_event_loop()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server = loop.run_until_complete(loop.create_server(_Answering, "127.0.0.1", 0, ssl=context))
    ports.put(server.sockets[0].getsockname()[1])
    loop.run_forever()


def start_processor(cert: Path, key: Path) -> tuple[multiprocessing.Process, int]:
    """The processor in a process of its own (not competing for this one's GIL)."""
    ports: multiprocessing.Queue[int] = multiprocessing.Queue()
    proc = multiprocessing.Process(target=_serve, args=(cert, key, ports), daemon=True)
    proc.start()
    return proc, ports.get(timeout=30)


async def _measure(
    name: str, call: Callable[[], Awaitable[Any]], concurrency: int, warmup: float, duration: float
) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    first_error = ""
    measuring = False
    stop = time.monotonic() + warmup + duration

    async def worker() -> None:
        nonlocal errors, first_error
        while time.monotonic() < stop:
            t0 = time.perf_counter()
            try:
                await call()
            except grpc.aio.AioRpcError as exc:
                errors += 1
                first_error = first_error or f"{exc.code().name}: {exc.details()}"
                continue
            if measuring:
                latencies.append(time.perf_counter() - t0)

    tasks = [asyncio.create_task(worker()) for _ in range(concurrency)]
    await asyncio.sleep(warmup)
    measuring = True
    start = time.monotonic()
    await asyncio.gather(*tasks)
    window = time.monotonic() - start
    ops = len(latencies)
    return {
        "scenario": name,
        "concurrency": concurrency,
        "ops": ops,
        "items": ops,
        "ops_per_s": round(ops / window, 1),
        "items_per_s": round(ops / window, 1),
        "latency_ms": percentiles_ms(latencies),
        "duration_s": round(window, 3),
        "errors": errors,
        "first_error": first_error,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="vault-forward-bench-"))
    ca_pem, cert, key = _certs(work)
    processor, port = start_processor(cert, key)
    config = Config(data_dir=work / "data", dev=True, listen="127.0.0.1:0", metrics_listen="")
    server = VaultServer(config)
    await server.start()
    try:
        assert server.audit is not None
        assert server.keys is not None
        keys, audit = server.keys, server.audit

        async def trail() -> Any:
            return audit

        async def secrets() -> RouteSecrets:
            found = await RouteSecrets.open(server.store, keys.kek, server.clock, create=True)
            assert found is not None
            return found

        admin = RouteAdministration(server.store, server.clock, trail, secrets, "bench")
        url = f"https://127.0.0.1:{port}/v1/payments"
        await admin.add(RouteSpec(name="local", url=url, ca_pem=ca_pem))
        await server.store.allow_routes("dev", ["local"], server.clock.now())
        md = (("authorization", f"Bearer {server.dev_key}"),)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            tokens = token_service_pb2_grpc.TokenServiceStub(channel)
            forward = forward_service_pb2_grpc.ForwardServiceStub(channel)
            pan = await tokens.Tokenize(pb.TokenizeRequest(kind=1, text=PAN), metadata=md)
            detok = pb.DetokenizeRequest(token=pan.token, purpose=PURPOSE)
            body = json.dumps(
                {"amount": 1000, "card": {"number": f"{{{{token:{pan.token}}}}}"}}
            ).encode()
            fwd = fpb.ForwardRequest(
                route="local",
                headers={"content-type": "application/json"},
                body=body,
                purpose=PURPOSE,
            )
            rows = [
                await _measure(
                    "detokenize_unary",
                    lambda: tokens.Detokenize(detok, metadata=md),
                    args.concurrency,
                    args.warmup,
                    args.duration,
                ),
                await _measure(
                    "forward_unary",
                    lambda: forward.Forward(fwd, metadata=md),
                    args.concurrency,
                    args.warmup,
                    args.duration,
                ),
            ]
    finally:
        await server.stop(grace=1.0)
        processor.terminate()
    return {"rows": rows}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--concurrency", type=int, default=16)
    args = p.parse_args()
    print(json.dumps(asyncio.run(run(args))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
