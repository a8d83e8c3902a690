"""A real vault server on port 0 and a real grpc.aio channel to it, per test.

The server runs in-process on a ManualClock, so TTLs and key expiry move by hand and no
test sleeps. ``vault.key`` is the dev API key (every scope, tenant "default");
``vault.add_caller`` mints others, shaped as ``vaultctl callers add`` makes them.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from api_helpers import bearer

from vault.auth.apikeys import hash_secret, mint_api_key
from vault.auth.policy import ALL_SCOPES
from vault.clock import ManualClock
from vault.config import Config
from vault.server import VaultServer
from vault.storage.base import CallerRow
from vault.v1 import token_service_pb2_grpc


@dataclass
class Vault:
    """One running server, its clock, a channel and a stub authorised as the dev caller."""

    server: VaultServer
    clock: ManualClock
    channel: grpc.aio.Channel
    stub: token_service_pb2_grpc.TokenServiceStub
    key: str
    db_path: Path

    @property
    def md(self) -> tuple[tuple[str, str], ...]:
        """Call metadata of the dev caller (every scope, tenant "default")."""
        return bearer(self.key)

    async def add_caller(
        self,
        name: str,
        scopes: tuple[str, ...] = ALL_SCOPES,
        *,
        tenant: str = "default",
        expires_at: float | None = None,
        **policy: Any,
    ) -> tuple[tuple[str, str], ...]:
        """A new caller in the store; returns its call metadata."""
        key = mint_api_key()
        await self.server.store.add_caller(
            CallerRow(
                name=name,
                tenant=tenant,
                scopes=scopes,
                key_id=key.key_id,
                key_hash=hash_secret(key.secret),
                created_at=self.clock.now(),
                expires_at=expires_at,
                revoked_at=None,
                **policy,
            )
        )
        return bearer(key.text)

    def sql(self, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run one statement on the store's file, outside the server (stdlib sqlite3)."""
        with contextlib.closing(sqlite3.connect(self.db_path, timeout=10)) as conn:
            rows = conn.execute(statement, params).fetchall()
            conn.commit()
            return rows

    def count_tokens(self) -> int:
        ((n,),) = self.sql("SELECT count(*) FROM tokens")
        return int(n)


VaultFactory = Callable[..., Awaitable[Vault]]


@pytest.fixture
async def vault_factory(tmp_path: Path) -> AsyncIterator[VaultFactory]:
    """Start servers with Config overrides; every one is stopped at teardown.

    The metrics port is off unless asked for (``metrics_listen="127.0.0.1:0"``): stopping
    prometheus_client's HTTP server waits out its 0.5 s poll, which adds up over a suite.
    """
    started: list[Vault] = []

    async def start(**overrides: Any) -> Vault:
        data_dir = tmp_path / f"data{len(started) or ''}"
        settings: dict[str, Any] = {
            "data_dir": data_dir,
            "listen": "127.0.0.1:0",
            "metrics_listen": "",
            "dev": True,
            "purge_interval": 3600,
        }
        config = Config(**(settings | overrides))
        clock = ManualClock()
        server = VaultServer(config, clock=clock)
        await server.start()
        assert server.port > 0
        assert server.dev_key is not None
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
        v = Vault(
            server=server,
            clock=clock,
            channel=channel,
            stub=token_service_pb2_grpc.TokenServiceStub(channel),
            key=server.dev_key,
            db_path=config.database_path,
        )
        started.append(v)
        return v

    yield start
    for v in reversed(started):
        await v.channel.close()
        await v.server.stop(grace=1.0)


@pytest.fixture
async def vault(vault_factory: VaultFactory) -> Vault:
    return await vault_factory()
