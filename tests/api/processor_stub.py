"""A real local HTTPS server standing in for a payment processor, in a thread: its own
test CA (made with ``cryptography`` in mtls_certs), optionally requiring a client
certificate (mTLS). It records every request it receives and answers by path:

- ``/charge``: 200, a JSON answer that echoes the card number back (``card.number``)
- ``/redirect``: 302 to another server (``redirect_to``)
- ``/big``: 200 with a 64 KiB body
- ``/slow``: answers after 3 s
- anything else: 200 ``{"ok":true}``
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from mtls_certs import Authority, issue


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Processor:
    """One running stub: its base URL, what it received, its CA."""

    server: ThreadingHTTPServer
    ca: Authority
    received: list[Received] = field(default_factory=list)
    redirect_to: str = "https://127.0.0.1:9/"

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _handler(processor: Processor) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_: Any) -> None:  # quiet
            return

        def _answer(self, status: int, body: bytes, **headers: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Request-Trace", "proc-123")
            self.send_header("Set-Cookie", "processor-session=1")
            for name, value in headers.items():
                self.send_header(name.replace("_", "-"), value)
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            processor.received.append(
                Received("POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            )
            if self.path == "/redirect":
                self._answer(302, b"", Location=processor.redirect_to)
            elif self.path == "/big":
                self._answer(200, b"x" * 65536)
            elif self.path == "/slow":
                time.sleep(3)
                self._answer(200, b"{}")
            elif self.path == "/charge":
                number = _card_number(body, self.headers.get("Content-Type", ""))
                answer = {"status": "succeeded", "card": {"number": number, "brand": "visa"}}
                self._answer(200, json.dumps(answer).encode())
            else:
                self._answer(200, b'{"ok":true}')

    return Handler


def _card_number(body: bytes, content_type: str) -> str:
    if "json" in content_type:
        return str(json.loads(body).get("paymentMethod", {}).get("number", ""))
    from urllib.parse import parse_qs  # noqa: PLC0415

    return parse_qs(body.decode()).get("card[number]", [""])[0]


def start_processor(ca: Authority, work: Path, *, client_ca: Authority | None = None) -> Processor:
    """A processor on 127.0.0.1 (port 0) with a server certificate of ``ca``; with
    ``client_ca``, a client certificate of that CA is required."""
    pair = issue(ca, "localhost", dns=("localhost",), ips=("127.0.0.1",), server=True)
    cert, key = pair.write(work, f"processor-{id(pair)}")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    if client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cadata=client_ca.pem.decode())
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    server.daemon_threads = True
    server.socket = context.wrap_socket(server.socket, server_side=True)
    processor = Processor(server, ca)
    server.RequestHandlerClass = _handler(processor)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return processor
