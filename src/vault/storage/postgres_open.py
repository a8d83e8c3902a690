"""Where a PostgreSQL database is, and what a failed open may say about it.

URLs carry passwords: nothing here lets one reach a log or an error. Used by the
PostgreSQL store, the subject-key store on PostgreSQL and ``vaultctl store copy``.
"""

from __future__ import annotations

import asyncio
import contextlib
import urllib.parse
from collections.abc import Awaitable, Callable

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from vault.errors import FailedPreconditionError, VaultError

__all__ = [
    "COMMAND_TIMEOUT",
    "CONNECT_TIMEOUT",
    "is_postgres_url",
    "open_error",
    "open_pool",
    "redact_url",
    "same_database",
]

# Seconds to connect (and to wait for a pooled connection): a database that is gone
# fails calls fast instead of piling them up.
CONNECT_TIMEOUT = 5.0
# Seconds one statement may run.
COMMAND_TIMEOUT = 30.0


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
