"""`vaultctl store migrate`: the owner role applies the migrations and grants the server
role; the server role then opens the store (no DDL) but cannot cut the audit trail."""

from __future__ import annotations

import asyncpg
import pytest

from vault.storage.postgres import PostgresStore

from .support import assert_one_line_failure, run_vaultctl

pytestmark = pytest.mark.slow

ROLE = "vault_server"
ROLE_PASSWORD = "server-role-test-password"
_CREATE_ROLE = (
    "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'vault_server') "
    "THEN CREATE ROLE vault_server LOGIN PASSWORD 'server-role-test-password'; END IF; END $$"
)


def _as_role(cluster, url: str) -> str:
    name = url.rsplit("/", 1)[1]
    return f"postgresql://{ROLE}:{ROLE_PASSWORD}@{cluster.host}:{cluster.port}/{name}"


async def test_migrate_grants_the_server_role_an_append_only_trail(
    pg_cluster, pg_database, pg_subject_key_database
):
    pg_cluster.psql(pg_database.rsplit("/", 1)[1], _CREATE_ROLE)
    args = (
        "store",
        "migrate",
        "--database-url",
        pg_database,
        "--subject-key-database-url",
        pg_subject_key_database,
        "--grant-to",
        ROLE,
    )
    first = run_vaultctl(*args)
    assert first.returncode == 0, first.stderr
    assert "migration(s) applied, schema current" in first.stdout
    assert f"granted the server role {ROLE}" in first.stdout
    password = pg_database.split(":")[2].split("@")[0]
    assert password not in first.stdout + first.stderr
    again = run_vaultctl(*args)
    assert again.returncode == 0, again.stderr
    assert ": 0 migration(s) applied" in again.stdout

    store = PostgresStore(_as_role(pg_cluster, pg_database))
    await store.open()  # a current schema: no DDL, so the server role opens it
    await store.close()
    conn = await asyncpg.connect(_as_role(pg_cluster, pg_database))
    try:
        for statement in ("TRUNCATE audit_log", "DELETE FROM audit_head"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(statement)
    finally:
        await conn.close()


def test_migrate_refuses_an_unknown_role_and_a_non_postgres_url(pg_database):
    unknown = run_vaultctl(
        "store", "migrate", "--database-url", pg_database, "--grant-to", "no_such_role"
    )
    assert "no role no_such_role in this cluster" in assert_one_line_failure(unknown)
    sqlite = run_vaultctl("store", "migrate", "--database-url", "sqlite:///tmp/x.db")
    assert "postgresql:// URL of the owner role" in assert_one_line_failure(sqlite)
