"""Fixtures every kind of test may use: the throwaway PostgreSQL cluster (pgcluster.py).

Without PostgreSQL installed the PostgreSQL tests are skipped, with the reason; with
CI=true they fail instead (`.ci/run` installs it, so a missing one is a broken CI).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from pgcluster import PgCluster, find_pg_bin


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    bin_dir = find_pg_bin()
    if bin_dir is None:
        reason = "PostgreSQL is not installed (no initdb under /usr/lib/postgresql/*/bin or PATH)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason}; CI must run the PostgreSQL tests (.ci/run installs it)")
        pytest.skip(reason)
    cluster = PgCluster(bin_dir)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def pg_database(pg_cluster) -> Iterator[str]:
    """A fresh, empty database of the session's cluster, for one test: its URL."""
    name = pg_cluster.create_database()
    try:
        yield pg_cluster.url(name)
    finally:
        pg_cluster.drop_database(name)
