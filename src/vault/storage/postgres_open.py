"""Where a PostgreSQL database is, and what a failed open may say about it.

URLs carry passwords: nothing here lets one reach a log or an error. Used by the
PostgreSQL store, the subject-key store on PostgreSQL and ``vaultctl store copy``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from vault.errors import FailedPreconditionError, VaultError
from vault.storage.sql.schema import migrations

__all__ = [
    "COMMAND_TIMEOUT",
    "CONNECT_TIMEOUT",
    "MIGRATE_HINT",
    "grant_server_role",
    "is_postgres_url",
    "migrate_schema",
    "open_error",
    "open_pool",
    "pending_migrations",
    "redact_url",
    "same_database",
]

log = logging.getLogger("vault.storage.postgres")

# Seconds to connect (and to wait for a pooled connection): a database that is gone
# fails calls fast instead of piling them up.
CONNECT_TIMEOUT = 5.0
# Seconds one statement may run.
COMMAND_TIMEOUT = 30.0


async def _rollback_if_open(conn: asyncpg.Connection[asyncpg.Record]) -> None:
    """What a released connection needs: the stores keep no session state (no LISTEN,
    advisory locks, cursors or SET), so asyncpg's default reset (UNLISTEN, CLOSE ALL,
    advisory unlock, RESET ALL: one more round trip per acquire on the hot path) is
    replaced by a rollback of a transaction left open, which is all it could undo."""
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


async def open_pool(
    url: str,
    *,
    max_size: int,
    application_name: str,
    migrate: Callable[[PoolConnectionProxy[asyncpg.Record]], Awaitable[None]],
) -> asyncpg.Pool[asyncpg.Record]:
    """A pool on the database at url, migrated once. A failed open leaves no connection
    behind (and no half-applied migration: each store migrates in one transaction) and
    says one value-free line (open_error)."""
    where = redact_url(url)
    try:
        pool = await asyncpg.create_pool(
            url,
            min_size=1,
            max_size=max_size,
            timeout=CONNECT_TIMEOUT,
            command_timeout=COMMAND_TIMEOUT,
            server_settings={"application_name": application_name},
            reset=_rollback_if_open,
        )
    except Exception as exc:  # noqa: BLE001 - every cause becomes one value-free line
        raise open_error(exc, where) from None
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
    except BaseException as exc:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(pool.close(), CONNECT_TIMEOUT)
        if isinstance(exc, Exception) and not isinstance(exc, VaultError):
            raise open_error(exc, where) from None
        raise
    return pool


def is_postgres_url(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


def same_database(one: str, other: str) -> bool:
    """Whether two postgresql:// URLs name the same database (host, port, name)."""
    try:
        a, b = urllib.parse.urlsplit(one), urllib.parse.urlsplit(other)
        where = [(u.hostname, u.port or 5432, u.path.strip("/")) for u in (a, b)]
    except ValueError:
        return False
    return where[0] == where[1]


def redact_url(url: str) -> str:
    """The URL without its password (and without a query that could carry one)."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "postgresql://…"
    user = f"{parts.username}@" if parts.username else ""
    return f"{parts.scheme}://{user}{host}{port}{parts.path}"


def open_error(exc: BaseException, where: str) -> FailedPreconditionError:
    """One value-free line for a failed open: never the URL's password or the driver's
    own message (which can quote the URL)."""
    if isinstance(exc, FailedPreconditionError):
        return exc
    if isinstance(
        exc, asyncpg.InvalidPasswordError | asyncpg.InvalidAuthorizationSpecificationError
    ):
        text = f"the database at {where} refused the credentials"
    elif isinstance(exc, asyncpg.InvalidCatalogNameError):
        text = f"no such database at {where}"
    elif isinstance(exc, asyncpg.ClientConfigurationError | ValueError):
        text = "the database URL is not valid"
    elif isinstance(exc, OSError | TimeoutError | asyncpg.CannotConnectNowError):
        text = f"cannot reach the database at {where}"
    else:
        text = f"cannot open the database at {where} ({type(exc).__name__})"
    return FailedPreconditionError(text, reason="STORE_OPEN_FAILED")


# -- the schema: migrations (by the owner role) and the server role's grants ------------

_Conn: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"
_RETRIES = 8
# Errors of two openers creating the migrations table at the same moment.
_CREATE_RACES = (
    asyncpg.UniqueViolationError,
    asyncpg.SerializationError,
    asyncpg.DeadlockDetectedError,
    asyncpg.DuplicateTableError,
    asyncpg.DuplicateObjectError,
)
# The first row of schema_migrations is a lock, not a migration: openers lock it FOR
# UPDATE, so replicas starting together apply each migration once.
_LOCK_VERSION = 0
MIGRATE_HINT = "run `vaultctl store migrate --database-url OWNER_URL` (the owner role)"


async def pending_migrations(conn: _Conn) -> list[int]:
    """Shipped migrations the database has not applied (read only, no DDL); refuses a
    schema a newer vault owns."""
    numbers = {number for number, _ in migrations("postgres")}
    if not await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL"):
        return sorted(numbers)
    rows = await conn.fetch(
        "SELECT version FROM schema_migrations WHERE version <> $1", _LOCK_VERSION
    )
    applied = {int(r[0]) for r in rows}
    if applied - numbers:
        # A migration this code does not know ran: a newer vault owns the schema.
        raise FailedPreconditionError(
            "the store's schema is newer than this vault; upgrade the vault",
            reason="SCHEMA_TOO_NEW",
        )
    return sorted(numbers - applied)


async def migrate_schema(conn: _Conn) -> None:
    """Bring the schema up to this vault's, or check that it is: an up-to-date schema
    runs no DDL (a least-privilege server role opens it); pending migrations are applied
    when the role may, else refused with what to run (MIGRATIONS_PENDING)."""
    pending = await pending_migrations(conn)
    if not pending:
        return
    try:
        await _apply_migrations(conn)
    except asyncpg.InsufficientPrivilegeError:
        raise FailedPreconditionError(
            f"the database has {len(pending)} pending migration(s) this role may not "
            f"apply: {MIGRATE_HINT}",
            reason="MIGRATIONS_PENDING",
        ) from None


async def _apply_migrations(conn: _Conn) -> None:
    known = migrations("postgres")
    numbers = {number for number, _ in known}
    for attempt in range(_RETRIES):
        try:
            async with conn.transaction():
                await conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations ("
                    " version BIGINT PRIMARY KEY,"  # migration number (0: the openers' lock)
                    " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"  # when it ran
                )
                await conn.execute(
                    "INSERT INTO schema_migrations (version) VALUES ($1) "
                    "ON CONFLICT (version) DO NOTHING",
                    _LOCK_VERSION,
                )
            break
        except _CREATE_RACES:
            # Another opener created the table at the same moment: it exists now.
            if attempt == _RETRIES - 1:
                raise
    # Every pending migration in one transaction: a failure leaves the schema as it was.
    async with conn.transaction():
        await conn.execute(
            "SELECT version FROM schema_migrations WHERE version = $1 FOR UPDATE", _LOCK_VERSION
        )
        rows = await conn.fetch(
            "SELECT version FROM schema_migrations WHERE version <> $1", _LOCK_VERSION
        )
        applied = {int(r[0]) for r in rows}
        if applied - numbers:
            raise FailedPreconditionError(
                "the store's schema is newer than this vault; upgrade the vault",
                reason="SCHEMA_TOO_NEW",
            )
        for number, script in known:
            if number in applied:
                continue
            await conn.execute(script)  # no arguments: the simple protocol, many statements
            await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", number)
            log.info("applied migration %d", number)


# What the server role may do, beyond reading and writing the vault's tables: nothing
# to the audit trail but append (audit_log) and move the head forward (audit_head).
_AUDIT_REVOKES = (
    "REVOKE UPDATE, DELETE, TRUNCATE ON audit_log FROM {role}",
    "REVOKE DELETE, TRUNCATE ON audit_head FROM {role}",
    "REVOKE UPDATE, DELETE, TRUNCATE ON audit_tokens FROM {role}",
)


async def grant_server_role(conn: _Conn, role: str, *, audit: bool = True) -> None:
    """Give ``role`` (an existing login role without DDL rights) what `vaultctl serve`
    needs on this database, as the owner: read and write the vault's tables, no
    TRUNCATE, no DELETE or UPDATE of audit records, no DELETE of the audit head.
    ``audit`` False: a database without the audit tables (the subject-key database)."""
    ident = await conn.fetchval("SELECT quote_ident($1)", role)
    if not await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role):
        raise FailedPreconditionError(f"no role {ident} in this cluster", reason="NO_SUCH_ROLE")
    schema = await conn.fetchval("SELECT quote_ident(current_schema())")
    async with conn.transaction():
        await conn.execute(f"GRANT USAGE ON SCHEMA {schema} TO {ident}")
        await conn.execute(
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {ident}"
        )
        await conn.execute(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {schema} TO {ident}")
        for statement in _AUDIT_REVOKES if audit else ():
            await conn.execute(statement.format(role=ident))
