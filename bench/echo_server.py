"""The baseline: an empty gRPC service with the vault's message shapes and settings.

``bench.v1.EchoService`` has ``Tokenize`` (TokenizeRequest -> TokenizeResponse with a
fixed token) and ``BatchTokenize`` (one fixed response per request), registered as a
generic handler that (de)serialises with the vault's generated classes. The server has
the vault's options (message sizes, metadata limit, no SO_REUSEPORT) and runs on uvloop
as ``vaultctl serve`` does, so the difference to the vault is the vault's own work.

Prints ``echo listening on 127.0.0.1:PORT`` once serving; stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import Any

import grpc

from vault.config import Config
from vault.v1 import token_service_pb2 as pb

SERVICE = "bench.v1.EchoService"
FIXED = pb.TokenizeResponse(
    token="4000000000004242",  # noqa: S106 - a fixed payment token, not a password
    fingerprint="A" * 43,
    masked="************4242",
    created=True,
)


async def tokenize(_request: pb.TokenizeRequest, _context: Any) -> pb.TokenizeResponse:
    return FIXED


async def batch_tokenize(
    request: pb.BatchTokenizeRequest, _context: Any
) -> pb.BatchTokenizeResponse:
    return pb.BatchTokenizeResponse(responses=[FIXED] * len(request.requests))


async def serve(listen: str) -> int:
    cfg = Config()
    # The options of vault.server.VaultServer._start_grpc.
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", cfg.max_message_bytes),
            ("grpc.max_send_message_length", 4 * cfg.max_message_bytes),
            ("grpc.max_metadata_size", 16 * 1024),
            ("grpc.so_reuseport", 0),
        ]
    )
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                SERVICE,
                {
                    "Tokenize": grpc.unary_unary_rpc_method_handler(
                        tokenize,
                        request_deserializer=pb.TokenizeRequest.FromString,
                        response_serializer=pb.TokenizeResponse.SerializeToString,
                    ),
                    "BatchTokenize": grpc.unary_unary_rpc_method_handler(
                        batch_tokenize,
                        request_deserializer=pb.BatchTokenizeRequest.FromString,
                        response_serializer=pb.BatchTokenizeResponse.SerializeToString,
                    ),
                },
            ),
        )
    )
    port = server.add_insecure_port(listen)
    await server.start()
    print(f"echo listening on {listen.rpartition(':')[0]}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1.0)
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--listen", default="127.0.0.1:0")
    args = p.parse_args()
    try:
        import uvloop  # noqa: PLC0415 - optional, as in vaultctl
    except ImportError:
        return asyncio.run(serve(args.listen))
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(serve(args.listen))


if __name__ == "__main__":
    sys.exit(main())
