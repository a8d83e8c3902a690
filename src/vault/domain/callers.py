"""Caller administration: add, revoke and list callers, and the audit records of it.

The rules the trail imposes: ``add`` makes no change it cannot record (the trail is
opened first) and hands out no key the trail lacks (recorded before it returns);
``revoke`` revokes first, whatever follows, because a leaked key must stop working even
when the master key (needed for the audit record) is not at hand, and then says so.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from vault.audit.base import (
    ACTION_CALLER_ADD,
    ACTION_CALLER_REVOKE,
    OUTCOME_ERROR,
    OUTCOME_OK,
    AuditEvent,
)
from vault.auth.apikeys import ApiKey, hash_secret, mint_api_key
from vault.clock import Clock
from vault.errors import AlreadyExistsError, FailedPreconditionError, NotFoundError, VaultError
from vault.storage.base import CallerRow, CallerStore
from vault.storage.route_store import RouteStore

__all__ = [
    "CallerAdminStore",
    "CallerAdministration",
    "EventRecorder",
    "NewCaller",
    "check_operator_scopes",
]


class CallerAdminStore(CallerStore, RouteStore, Protocol):
    """Callers, and the Forward routes a new caller may be allowed."""


class EventRecorder(Protocol):
    """Where the records go: the audit trail (durable when ``record`` returns)."""

    async def record(self, events: Sequence[AuditEvent]) -> None: ...


@dataclass(frozen=True, slots=True)
class NewCaller:
    """A caller to add: an API key is minted unless it is bound to a certificate."""

    name: str
    tenant: str
    scopes: tuple[str, ...]
    cert_identity: str | None = None
    expires_at: float | None = None  # unix seconds; None = never
    reveal_kinds: tuple[str, ...] = ()  # DataKind names; () = every kind
    reveal_rate: float = 0.0  # reveals per second; 0 = no limit
    reveal_burst: int = 0  # reveals at once; 0 = the rate (at least 1)
    routes: tuple[str, ...] = ()  # Forward routes it may use (with the forward scope)
    # Tokenize budget in items; None = the server's tokenize_rate / tokenize_burst.
    tokenize_rate: float | None = None
    tokenize_burst: int | None = None

    def audit_detail(self) -> dict[str, str]:
        """What the trail says about the new caller: never its key."""
        expires = (
            datetime.fromtimestamp(self.expires_at, UTC).isoformat()
            if self.expires_at is not None
            else ""
        )
        return {
            "name": self.name,
            "cert_identity": self.cert_identity or "",
            "scopes": ",".join(self.scopes),
            "expires": expires,
            "reveal_kinds": ",".join(self.reveal_kinds),
            "reveal_rate": str(self.reveal_rate),
            "tokenize_rate": "" if self.tokenize_rate is None else str(self.tokenize_rate),
            "tokenize_burst": "" if self.tokenize_burst is None else str(self.tokenize_burst),
        } | ({"routes": ",".join(self.routes)} if self.routes else {})


# The scope that acts on the whole vault (data keys, the master key, custodian shares),
# whatever tenant asks: only callers of the operator tenant may hold it.
_GLOBAL_SCOPE = "keys"


def check_operator_scopes(new: NewCaller, operator_tenant: str) -> None:
    """`keys` is global, not tenant-bound: a caller of any tenant but the operator one
    holding it could rotate, retire and re-wrap every tenant's keys."""
    if _GLOBAL_SCOPE in new.scopes and new.tenant != operator_tenant:
        raise FailedPreconditionError(
            f"the keys scope acts on every tenant: only callers of the operator tenant "
            f"({operator_tenant}) may hold it",
            reason="KEYS_SCOPE_NOT_OPERATOR",
        )


class CallerAdministration:
    """The caller use cases, as ``actor`` (the operator the trail names). With
    ``operator_tenant``, a new caller of another tenant may not hold the `keys` scope."""

    def __init__(
        self,
        store: CallerAdminStore,
        clock: Clock,
        open_trail: Callable[[], Awaitable[EventRecorder]],
        actor: str,
        *,
        operator_tenant: str | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._open_trail = open_trail
        self._actor = actor
        self._operator_tenant = operator_tenant

    async def list(self) -> list[CallerRow]:
        return await self._store.callers()

    async def add(self, new: NewCaller) -> ApiKey | None:
        """Add the caller; its API key (shown once), or None for a certificate identity."""
        if self._operator_tenant is not None:
            check_operator_scopes(new, self._operator_tenant)
        # The trail first: a vault that cannot record the change makes none.
        trail = await self._open_trail()
        if new.routes:
            known = {r.name for r in await self._store.routes()}
            if not set(new.routes) <= known:
                raise NotFoundError("no route with that name", reason="ROUTE_NOT_FOUND")
        key = None if new.cert_identity else mint_api_key()
        detail = new.audit_detail()
        try:
            await self._store.add_caller(self._row(new, key))
        except AlreadyExistsError as exc:
            await self._record(trail, ACTION_CALLER_ADD, new.tenant, detail, exc.reason)
            raise
        await self._store.allow_routes(new.name, new.routes, self._clock.now())
        # Recorded before the key is returned: a change the trail lacks hands out no key.
        await self._record(trail, ACTION_CALLER_ADD, new.tenant, detail, "")
        return key

    async def revoke(self, name: str) -> None:
        """Revoke the caller's key; NotFoundError if no active caller has that name."""
        done = await self._store.revoke_caller(name, self._clock.now())
        tenant = next((r.tenant for r in await self._store.callers() if r.name == name), "")
        try:
            trail = await self._open_trail()
        except VaultError as exc:
            if not done:
                raise
            raise FailedPreconditionError(
                f"revoked {name}, but the audit trail could not record it: {exc}",
                reason=exc.reason,
            ) from None
        reason = "" if done else "CALLER_NOT_FOUND"
        await self._record(trail, ACTION_CALLER_REVOKE, tenant, {"name": name}, reason)
        if not done:
            raise NotFoundError("no active caller with that name", reason=reason)

    def _row(self, new: NewCaller, key: ApiKey | None) -> CallerRow:
        return CallerRow(
            name=new.name,
            tenant=new.tenant,
            scopes=new.scopes,
            key_id=key.key_id if key else None,
            key_hash=hash_secret(key.secret) if key else None,
            cert_identity=new.cert_identity,
            created_at=self._clock.now(),
            expires_at=new.expires_at,
            revoked_at=None,
            reveal_kinds=new.reveal_kinds,
            reveal_rate=new.reveal_rate,
            reveal_burst=new.reveal_burst,
            tokenize_rate=new.tokenize_rate,
            tokenize_burst=new.tokenize_burst,
        )

    async def _record(
        self,
        trail: EventRecorder,
        action: str,
        tenant: str,
        detail: Mapping[str, str],
        reason: str,
    ) -> None:
        event = AuditEvent(
            self._clock.now(),
            self._actor,
            tenant,
            action,
            outcome=OUTCOME_ERROR if reason else OUTCOME_OK,
            reason=reason,
            detail=detail,
        )
        await trail.record([event])
