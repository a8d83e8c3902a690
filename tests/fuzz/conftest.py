"""The fuzzing campaign's budget and a real server for it.

Hypothesis runs under one of two profiles: ``ci`` (the default, in ``make test``: a fixed,
derandomized budget of a few tens of seconds over the whole directory) and ``fuzz``
(``make fuzz``, VAULT_FUZZ_PROFILE=fuzz: many more examples from a fresh seed).

The server runs on the test's event loop, on port 0, over a real SQLite file; the
property tests drive it from a worker thread through a synchronous grpc channel, so
hypothesis keeps its ordinary (synchronous) shape.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from fuzz_server import Served
from hypothesis import HealthCheck, settings

from vault.clock import ManualClock
from vault.config import Config
from vault.server import VaultServer
from vault.v1 import token_service_pb2, types_pb2

settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=60,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
settings.register_profile(
    "fuzz",
    derandomize=False,
    deadline=None,
    max_examples=3000,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    print_blob=True,
)
settings.load_profile(os.environ.get("VAULT_FUZZ_PROFILE", "ci"))


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    config = Config(
        data_dir=tmp_path / "data",
        listen="127.0.0.1:0",
        metrics_listen="",
        dev=True,
        purge_interval=3600,
        retention_interval=3600,
    )
    clock = ManualClock()
    server = VaultServer(config, clock=clock)
    await server.start()
    assert server.dev_key is not None
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    served = Served(
        server, clock, channel, server.dev_key, config.database_path, asyncio.get_running_loop()
    )
    # The tenant's fingerprint key is made on its first write: made here, before the
    # campaign, so "the store is unchanged by a refused call" compares like with like
    # (subject requests once made it on a read too: see test_regressions.py).
    await asyncio.to_thread(
        served.tokenize,
        token_service_pb2.TokenizeRequest(kind=types_pb2.DATA_KIND_TEXT, text="first use"),
    )
    try:
        yield served
    finally:
        channel.close()
        await server.stop(grace=1.0)
