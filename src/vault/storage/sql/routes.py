"""The routes aggregate (RouteStore), written once for both dialects.

A store mixes ``SqlRoutes`` in and supplies ``_dialect``, ``_rows`` (one read query)
and ``_write`` (sql/tx.py: a transaction run durably by the store's driver).
The SQL is written with ``?``; ``Dialect.sql`` numbers it for PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from vault.storage.route_store import RouteRow
from vault.storage.sql.dialect import Dialect
from vault.storage.sql.tx import Tx, Writes, run

__all__ = ["ROUTE_COLUMNS", "SqlRoutes", "Statement"]

# A route row, in the order _route_params and _route_from_row use.
ROUTE_COLUMNS = (
    "name, url, method, ca_pem, client_cert_pem, client_key_sealed, allow_headers, "
    "timeout, max_response_bytes, tokenize_paths, created_at, revision"
)
# A statement and its parameters.
Statement = tuple[str, tuple[Any, ...]]


def _joined(names: Sequence[str]) -> str:
    return ",".join(names)


def _split(text: str) -> tuple[str, ...]:
    return tuple(n for n in text.split(",") if n)


def _blob(value: Any) -> bytes | None:
    return None if value is None else bytes(value)


def _route_params(route: RouteRow) -> tuple[Any, ...]:
    return (
        route.name,
        route.url,
        route.method,
        route.ca_pem,
        route.client_cert_pem,
        route.client_key_sealed,
        _joined(route.allow_headers),
        route.timeout,
        route.max_response_bytes,
        _joined(route.tokenize_paths),
        route.created_at,
        1,
    )


def _route_from_row(row: Sequence[Any]) -> RouteRow:
    return RouteRow(
        name=row[0],
        url=row[1],
        method=row[2],
        ca_pem=_blob(row[3]),
        client_cert_pem=_blob(row[4]),
        client_key_sealed=_blob(row[5]),
        allow_headers=_split(row[6]),
        timeout=float(row[7]),
        max_response_bytes=int(row[8]),
        tokenize_paths=_split(row[9]),
        created_at=float(row[10]),
        revision=int(row[11]),
    )


def _put_route_sql(dialect: Dialect) -> str:
    """An upsert that moves the revision on when the route already exists."""
    sets = ", ".join(
        f"{c} = excluded.{c}"
        for c in (c.strip() for c in ROUTE_COLUMNS.split(","))
        if c not in {"name", "revision"}
    )
    return (
        f"{dialect.insert('routes', ROUTE_COLUMNS)} "
        f"ON CONFLICT (name) DO UPDATE SET {sets}, revision = routes.revision + 1"
    )


def _run_all(statements: Sequence[Statement]) -> Tx[list[int]]:
    counts: list[int] = []
    for sql, params in statements:
        counts.append(int((yield run(sql, *params))))
    return counts


class SqlRoutes(Writes):
    """RouteStore over the shared schema."""

    _dialect: Dialect

    async def _rows(self, sql: str, *args: Any) -> list[Any]:
        raise NotImplementedError

    async def _statements(self, statements: Sequence[Statement]) -> list[int]:
        """The statements in one transaction, answering each one's row count."""
        return await self._write(lambda: _run_all(statements))

    async def put_route(self, route: RouteRow) -> None:
        await self._statements([(_put_route_sql(self._dialect), _route_params(route))])

    async def remove_route(self, name: str) -> bool:
        sql = self._dialect.sql
        removed, _ = await self._statements(
            [
                (sql("DELETE FROM routes WHERE name = ?"), (name,)),
                (sql("DELETE FROM caller_routes WHERE route = ?"), (name,)),
            ]
        )
        return removed > 0

    async def routes(self) -> list[RouteRow]:
        rows = await self._rows(f"SELECT {ROUTE_COLUMNS} FROM routes ORDER BY name")  # noqa: S608 - constant
        return [_route_from_row(r) for r in rows]

    async def allow_routes(self, caller: str, routes: Sequence[str], now: float) -> None:
        if not routes:
            return
        insert = self._dialect.insert("caller_routes", "caller, route, created_at")
        statement = f"{insert} ON CONFLICT (caller, route) DO NOTHING"
        await self._statements([(statement, (caller, route, now)) for route in routes])

    async def route_permissions(self) -> list[tuple[str, str]]:
        rows = await self._rows("SELECT caller, route FROM caller_routes ORDER BY caller, route")
        return [(str(r[0]), str(r[1])) for r in rows]
