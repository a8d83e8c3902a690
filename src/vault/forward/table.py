"""The routes a running server forwards on, reloaded from the store when older than
``refresh_seconds`` (checked on each forward): a `vaultctl routes add|remove` or a
`callers add --routes` is picked up within that window, without a restart."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

from vault.errors import VaultError
from vault.forward.base import Route
from vault.forward.routes import RouteSecrets, route_from_row
from vault.storage.route_store import RouteStore

__all__ = ["RouteTable"]

log = logging.getLogger(__name__)


class RouteTable:
    """Routes by name and the (caller, route) permissions, as of the last reload."""

    def __init__(
        self,
        store: RouteStore,
        open_secrets: Callable[[], Awaitable[RouteSecrets | None]],
        *,
        refresh_seconds: float = 2.0,
        monotonic: Callable[[], float] = time.monotonic,
        on_reload: Callable[[Mapping[str, Route]], None] | None = None,
    ) -> None:
        self._on_reload = on_reload
        self._store = store
        self._open_secrets = open_secrets
        self._secrets: RouteSecrets | None = None
        self._refresh = refresh_seconds
        self._monotonic = monotonic
        self._routes: dict[str, Route] = {}
        self._allowed: frozenset[tuple[str, str]] = frozenset()
        self._loaded_at: float | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"RouteTable({len(self._routes)} routes)"

    async def route(self, name: str) -> Route | None:
        await self._fresh()
        return self._routes.get(name)

    def allowed(self, caller: str, route: str) -> bool:
        """Whether the caller may forward on the route (as of the last reload)."""
        return (caller, route) in self._allowed

    async def _fresh(self) -> None:
        loaded = self._loaded_at
        if loaded is not None and self._monotonic() - loaded < self._refresh:
            return
        async with self._lock:
            if self._loaded_at is loaded:
                await self.reload()

    async def reload(self) -> None:
        """Read every route and permission; a route whose revision did not move keeps
        its unsealed key. A route that cannot be opened is left out (and logged by name)."""
        rows = await self._store.routes()
        permissions = await self._store.route_permissions()
        routes: dict[str, Route] = {}
        for row in rows:
            known = self._routes.get(row.name)
            if known is not None and known.revision == row.revision:
                routes[row.name] = known
                continue
            if row.client_key_sealed is not None and self._secrets is None:
                self._secrets = await self._open_secrets()
            try:
                routes[row.name] = route_from_row(row, self._secrets)
            except VaultError as exc:
                log.error("route %s cannot be used: %s", row.name, exc.reason)
        self._routes = routes
        self._allowed = frozenset(permissions)
        self._loaded_at = self._monotonic()
        if self._on_reload is not None:
            self._on_reload(routes)
