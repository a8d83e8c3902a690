"""The routes aggregate of the store: Forward routes configured by ops, and which
callers may use them (migration 0011). Part of ``Store``; kept in its own module so the
storage base stays readable, implemented once for both dialects in ``sql/routes.py``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = ["RouteRow", "RouteStore"]


@dataclass(frozen=True, slots=True)
class RouteRow:
    """One stored route, as the routes table holds it."""

    name: str  # what a ForwardRequest names
    url: str  # https URL every forward on the route goes to
    method: str  # HTTP method
    ca_pem: bytes | None  # CA certificates (PEM) the processor must chain to; None = system roots
    client_cert_pem: bytes | None  # client certificate chain (PEM) for mTLS; None = none
    client_key_sealed: bytes | None  # its private key, sealed under route-secrets:1
    allow_headers: tuple[str, ...]  # lower-case header names a caller may send and receive
    timeout: float  # seconds a forward may take in all
    max_response_bytes: int  # largest answer body returned
    tokenize_paths: tuple[str, ...]  # JSON paths of the answer whose PANs are tokenized
    created_at: float  # unix seconds the route was (re)configured
    revision: int = 1  # bumped by the store on each change (ignored by put_route)

    def __repr__(self) -> str:
        return f"RouteRow(name={self.name!r}, revision={self.revision})"


class RouteStore(Protocol):
    """Routes and the callers allowed to use them."""

    async def put_route(self, route: RouteRow) -> None:
        """Add the route, or replace the one of that name (its revision moves on)."""
        ...

    async def remove_route(self, name: str) -> bool:
        """Remove the route and every permission to use it; False if there was none."""
        ...

    async def routes(self) -> list[RouteRow]:
        """Every route, by name."""
        ...

    async def allow_routes(self, caller: str, routes: Sequence[str], now: float) -> None:
        """Let the caller forward to these routes (kept if already allowed)."""
        ...

    async def route_permissions(self) -> list[tuple[str, str]]:
        """Every (caller, route) permission."""
        ...
