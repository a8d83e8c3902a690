"""Leased background jobs: one process runs each job; another takes over after expiry.

Real stores (SQLite file, PostgreSQL database of the test cluster) and a ManualClock:
the lease's expiry is moved past by hand, no test sleeps.
"""

from __future__ import annotations

import pytest

from vault.clock import ManualClock
from vault.jobs import LeasedJob, lease_seconds
from vault.storage.postgres import PostgresStore
from vault.storage.sqlite import SqliteStore


@pytest.fixture(params=["sqlite", "postgres"])
async def stores(request, tmp_path):
    """Two stores on one database: two vault processes."""
    if request.param == "sqlite":
        made = [SqliteStore(tmp_path / "vault.db") for _ in range(2)]
    else:
        url = request.getfixturevalue("pg_database")
        made = [PostgresStore(url) for _ in range(2)]
    for store in made:
        await store.open()
    yield made
    for store in made:
        await store.close()


def _job(store, clock, runs, who):
    async def run() -> None:
        runs.append(who)

    return LeasedJob(store, clock, "ttl-purge", 10.0, run, holder=who)


async def test_one_process_runs_the_job_and_another_takes_over_when_it_dies(stores):
    clock = ManualClock()
    runs: list[str] = []
    a, b = _job(stores[0], clock, runs, "a"), _job(stores[1], clock, runs, "b")
    for _ in range(3):
        assert await a() is True
        assert await b() is False
        clock.advance(10)
    assert runs == ["a", "a", "a"]
    assert (a.held, b.held) == (True, False)
    # `a` dies (stops renewing): `b` waits out the lease, then runs the job alone.
    clock.advance(lease_seconds(10.0) - 10 - 1)
    assert await b() is False
    clock.advance(1)
    assert await b() is True
    assert runs == ["a", "a", "a", "b"]
    assert await a() is False  # back from the dead, it is not the holder any more


async def test_a_clean_stop_hands_the_job_over_at_once(stores):
    clock = ManualClock()
    runs: list[str] = []
    a, b = _job(stores[0], clock, runs, "a"), _job(stores[1], clock, runs, "b")
    assert await a() is True
    await a.release()
    assert await b() is True
    assert runs == ["a", "b"]


async def test_jobs_have_leases_of_their_own(stores):
    clock = ManualClock()
    runs: list[str] = []

    async def other() -> None:
        runs.append("other")

    assert await _job(stores[0], clock, runs, "a")() is True
    assert await LeasedJob(stores[1], clock, "rewrap", 10.0, other, holder="b")() is True
    assert runs == ["a", "other"]
