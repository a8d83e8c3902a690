"""Key usage and rewrap progress on a real server's metrics port. Rewrap progress comes
from the store, so a server exports a rewrap another process runs (here a second store
on the same file, as ``vaultctl keys rewrap`` opens one)."""

from __future__ import annotations

import asyncio
import urllib.request
from dataclasses import replace
from types import SimpleNamespace

from api_helpers import tokenize_request
from prometheus_client.parser import text_string_to_metric_families

from vault.crypto.keyfile import KeyFileKek
from vault.domain import rotation
from vault.domain.keyops import Actor
from vault.server import VaultServer
from vault.storage.base import RewrapProgressRow
from vault.storage.sqlite import SqliteStore

NO_PERIODIC = {"key_refresh_interval": 3600.0}


async def scrape(vault) -> dict[str, float]:
    def get() -> str:
        url = f"http://127.0.0.1:{vault.server.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.read().decode()

    body = await asyncio.to_thread(get)
    return {
        s.name: s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
        if not s.labels
    }


async def test_key_usage_and_age(vault_factory):
    vault = await vault_factory(
        metrics_listen="127.0.0.1:0", key_max_encryptions=100, **NO_PERIODIC
    )
    for i in range(25):
        await vault.stub.Tokenize(tokenize_request("TEXT", f"v{i}"), metadata=vault.md)
    vault.clock.advance(3600)
    await vault.server._refresh_keys()  # what the periodic refresh does
    got = await scrape(vault)
    assert got["vault_key_usage_ratio"] == 0.25
    assert got["vault_key_age_seconds"] == 3600.0


async def test_a_rewrap_in_another_process_is_exported(vault_factory):
    vault = await vault_factory(metrics_listen="127.0.0.1:0", **NO_PERIODIC)
    for i in range(30):
        await vault.stub.Tokenize(tokenize_request("TEXT", f"r{i}"), metadata=vault.md)
    store = vault.server.store
    kek = KeyFileKek.load(vault.server.config.master_key_path)
    await rotation.rotate(store, kek, vault.clock)
    await vault.server._refresh_keys()
    start = (await scrape(vault)).get("vault_rewrap_records_total", 0.0)

    # Midway through a run elsewhere: what its last batch wrote.
    other = SqliteStore(vault.db_path)
    await other.open()
    try:
        now = vault.clock.now()
        assert await other.take_rewrap_lease("elsewhere", now, now + 5)
        midway = RewrapProgressRow(
            holder="elsewhere",
            primary_version=2,
            batch_size=10,
            rate=0.0,
            started_at=now - 4,
            last_batch_at=now - 1,
            finished_at=None,
            batches=1,
            rewrapped=10,
            skipped=0,
            failed=0,
            remaining=20,
        )
        await other.put_rewrap_progress(midway)
        await vault.server._refresh_keys()
        got = await scrape(vault)
        assert got["vault_rewrap_remaining_records"] == 20
        assert got["vault_rewrap_last_progress_timestamp_seconds"] == now - 1
        assert got["vault_rewrap_records_total"] == start + 10
        # Seen again unchanged: counted once.
        await vault.server._refresh_keys()
        assert (await scrape(vault))["vault_rewrap_records_total"] == start + 10
        await other.release_rewrap_lease("elsewhere")

        # A real run (another holder) from the start, to the end.
        vault.clock.advance(60)
        result = await rotation.rewrap(other, kek, vault.clock, batch=7)
        assert (result.rewrapped, result.remaining) == (30, 0)
    finally:
        await other.close()
    await vault.server._refresh_keys()
    got = await scrape(vault)
    assert got["vault_rewrap_remaining_records"] == 0
    assert got["vault_rewrap_records_total"] == start + 10 + 30
    assert got["vault_rewrap_last_progress_timestamp_seconds"] == vault.clock.now()
    assert got["vault_key_usage_ratio"] == 30 / 2**30


async def test_a_rewrap_the_server_runs_counts_as_it_goes(vault_factory):
    vault = await vault_factory(metrics_listen="127.0.0.1:0", **NO_PERIODIC)
    for i in range(12):
        await vault.stub.Tokenize(tokenize_request("TEXT", f"s{i}"), metadata=vault.md)
    assert vault.server.key_ops is not None
    start = (await scrape(vault)).get("vault_rewrap_records_total", 0.0)
    await vault.server.key_ops.rotate(Actor("test"))
    vault.clock.advance(60)
    actor = Actor("test")
    run = await vault.server.key_ops.start_rewrap(actor, batch=5, rate=0.0)
    await vault.server.key_ops.finish_rewrap(actor, run)
    got = await scrape(vault)
    assert got["vault_rewrap_records_total"] == start + 12
    assert got["vault_rewrap_remaining_records"] == 0
    # The periodic refresh then sees the same run in the store: not counted again.
    await vault.server._refresh_keys()
    assert (await scrape(vault))["vault_rewrap_records_total"] == start + 12


async def test_a_restarted_server_does_not_count_earlier_runs_again(vault_factory):
    vault = await vault_factory(metrics_listen="127.0.0.1:0", **NO_PERIODIC)
    for i in range(4):
        await vault.stub.Tokenize(tokenize_request("TEXT", f"t{i}"), metadata=vault.md)
    kek = KeyFileKek.load(vault.server.config.master_key_path)
    await rotation.rotate(vault.server.store, kek, vault.clock)
    await rotation.rewrap(vault.server.store, kek, vault.clock)
    await vault.server._refresh_keys()
    counted = (await scrape(vault))["vault_rewrap_records_total"]
    await vault.server.stop(grace=1.0)
    # A new server on the same store, in the same process (the same registry): the
    # finished run is its baseline, not counted again.
    again = VaultServer(replace(vault.server.config, dev=False), clock=vault.clock)
    await again.start()
    try:
        await again._refresh_keys()
        got = await scrape(SimpleNamespace(server=again))
    finally:
        await again.stop(grace=1.0)
    assert got["vault_rewrap_records_total"] == counted
    assert got["vault_rewrap_remaining_records"] == 0
