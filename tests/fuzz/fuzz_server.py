"""A real vault server for the campaign, and byte-for-byte snapshots of its store."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import grpc

from vault.clock import ManualClock
from vault.server import VaultServer
from vault.v1 import token_service_pb2

# The audit trail is append-only by design, and refused credentials and permissions are
# recorded in it: after a refused call it may only have grown at its end (and its head,
# the chain's last hash, moved with it).
# Background jobs (purges, auto-rotation) take and renew their leases on their own timers,
# whatever the calls do: the lease table is not the calls' to change or keep.
BACKGROUND_TABLES = frozenset({"job_leases"})
AUDIT_LOG = "audit_log"
AUDIT_HEAD = "audit_head"


@dataclass(frozen=True)
class StoreSnapshot:
    """A digest per table of every row, and the audit rows themselves."""

    tables: dict[str, str]
    appended: dict[str, list[tuple[object, ...]]]


@dataclass
class Served:
    server: VaultServer
    clock: ManualClock
    channel: grpc.Channel
    key: str
    db_path: Path
    loop: asyncio.AbstractEventLoop

    def settle(self) -> None:
        """Let a rewrap that an accepted RewrapKeys started end (1 s at most, then it is
        cancelled), so that no background job writes during the next call."""
        assert self.server.key_ops is not None
        task = self.server.key_ops._background
        if task is not None and not task.done():
            asyncio.run_coroutine_threadsafe(_end(task), self.loop).result(timeout=20)

    @property
    def md(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.key}"),)

    def tokenize(self, request: token_service_pb2.TokenizeRequest) -> str:
        stub = self.channel.unary_unary(
            "/vault.v1.TokenService/Tokenize",
            request_serializer=token_service_pb2.TokenizeRequest.SerializeToString,
            response_deserializer=token_service_pb2.TokenizeResponse.FromString,
        )
        return str(stub(request, metadata=self.md, timeout=20).token)

    def snapshot(self) -> StoreSnapshot:
        """Every table's rows, read outside the server (stdlib sqlite3, WAL included)."""
        with contextlib.closing(sqlite3.connect(self.db_path, timeout=10)) as conn:
            names = [
                n
                for (n,) in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
                )
            ]
            tables: dict[str, str] = {}
            appended: dict[str, list[tuple[object, ...]]] = {}
            for name in names:
                rows = conn.execute(f'SELECT * FROM "{name}"').fetchall()  # noqa: S608 - names from sqlite_master
                if name in BACKGROUND_TABLES:
                    continue
                if name == AUDIT_LOG:
                    appended[name] = rows
                    continue
                digest = hashlib.sha256()
                for row in sorted(repr(r) for r in rows):
                    digest.update(row.encode() + b"\0")
                tables[name] = digest.hexdigest()
        return StoreSnapshot(tables, appended)


def assert_unchanged(before: StoreSnapshot, after: StoreSnapshot) -> None:
    """Byte for byte the same rows, but for records appended to the audit trail."""
    old, new = before.appended[AUDIT_LOG], after.appended[AUDIT_LOG]
    assert new[: len(old)] == old, "the audit trail was rewritten"
    same = dict(before.tables)
    changed = dict(after.tables)
    if len(new) > len(old):
        same.pop(AUDIT_HEAD, None)
        changed.pop(AUDIT_HEAD, None)
    assert changed == same, "a refused call changed the store"


async def _end(task: asyncio.Task[None]) -> None:
    with contextlib.suppress(TimeoutError, asyncio.CancelledError):
        await asyncio.wait_for(asyncio.shield(task), timeout=1.0)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
