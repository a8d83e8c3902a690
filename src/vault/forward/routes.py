"""The ops side of Forward: a route's settings checked, its client key sealed under the
master key (through the service key ``route-secrets:1``), and the audited administration
that ``vaultctl routes add|list|remove`` runs."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from vault.audit.base import (
    ACTION_ROUTE_ADD,
    ACTION_ROUTE_ALLOW,
    ACTION_ROUTE_REMOVE,
    OUTCOME_OK,
    AuditEvent,
)
from vault.clock import Clock
from vault.crypto.aead import RecordKey
from vault.crypto.base import KekProvider
from vault.crypto.keyring import new_data_key
from vault.domain.callers import EventRecorder
from vault.errors import (
    FailedPreconditionError,
    FieldViolation,
    InvalidArgumentError,
    NotFoundError,
)
from vault.forward.base import Route
from vault.forward.filtering import parse_path
from vault.secrets import SecretBytes
from vault.storage.base import WrappedKeyStore
from vault.storage.route_store import RouteRow, RouteStore

__all__ = [
    "MAX_RESPONSE_BYTES",
    "MAX_TIMEOUT",
    "ROUTE_SECRETS_KEY_NAME",
    "RouteAdministration",
    "RouteSecrets",
    "RouteSpec",
    "check_spec",
    "route_from_row",
]

# The service key that seals routes' client keys (itself wrapped by the master key, so a
# master-key rotation rewraps it with the others).
ROUTE_SECRETS_KEY_NAME = "route-secrets:1"
MAX_TIMEOUT = 60.0  # seconds
MAX_RESPONSE_BYTES = 16 * 1024 * 1024
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
_HEADER = re.compile(r"[a-z0-9!#$%&'*+.^_`|~-]{1,64}")
_METHODS = frozenset({"POST", "PUT", "PATCH", "GET", "DELETE"})
# Never the caller's to set: the vault frames the request and picks where it goes.
_FORBIDDEN_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "proxy-authorization",
        "proxy-connection",
        "content-encoding",
        "expect",
    }
)


@dataclass(frozen=True, slots=True)
class RouteSpec:
    """A route as ops asks for it."""

    name: str
    url: str
    method: str = "POST"
    ca_pem: bytes | None = None
    client_cert_pem: bytes | None = None
    client_key_pem: SecretBytes | None = field(default=None, repr=False)
    allow_headers: tuple[str, ...] = ()
    timeout: float = 10.0
    max_response_bytes: int = 1024 * 1024
    tokenize_paths: tuple[str, ...] = ()

    def audit_detail(self) -> dict[str, str]:
        """What the trail says about the route: never its client key."""
        return {
            "name": self.name,
            "url": self.url,
            "method": self.method,
            "ca": "route" if self.ca_pem else "system",
            "mtls": "yes" if self.client_cert_pem else "no",
            "allow_headers": ",".join(self.allow_headers),
            "timeout": str(self.timeout),
            "max_response_bytes": str(self.max_response_bytes),
            "tokenize_paths": ",".join(self.tokenize_paths),
        }


def _url_violation(url: str) -> str | None:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "is not a URL"
    if parts.scheme != "https":
        return "must be an https:// URL (TLS is always on and verified)"
    if not parts.hostname or parts.username is not None or parts.password is not None:
        return "must name a host and no user or password"
    if parts.fragment or port == 0:
        return "must have no fragment and a valid port"
    return None


def _pem_violations(spec: RouteSpec) -> list[FieldViolation]:
    out = []
    if spec.ca_pem is not None:
        try:
            x509.load_pem_x509_certificates(spec.ca_pem)
        except ValueError:
            out.append(FieldViolation("ca", "is not a PEM certificate file"))
    if (spec.client_cert_pem is None) != (spec.client_key_pem is None):
        out.append(FieldViolation("client_cert", "needs client_key with it, and the reverse"))
    elif spec.client_cert_pem is not None and spec.client_key_pem is not None:
        try:
            cert = x509.load_pem_x509_certificates(spec.client_cert_pem)[0]
            key = serialization.load_pem_private_key(spec.client_key_pem.reveal(), None)
        except (ValueError, TypeError):
            out.append(FieldViolation("client_key", "is not an unencrypted PEM key and cert"))
        else:
            if cert.public_key() != key.public_key():
                out.append(FieldViolation("client_key", "does not match client_cert"))
    return out


def check_spec(spec: RouteSpec) -> None:
    """Refuse (INVALID_ARGUMENT, naming each field) a route the vault must not use."""
    out: list[FieldViolation] = []
    if not _NAME.fullmatch(spec.name):
        out.append(FieldViolation("name", "must be 1-63 of a-z 0-9 . _ - (lower case)"))
    if (why := _url_violation(spec.url)) is not None:
        out.append(FieldViolation("url", why))
    if spec.method not in _METHODS:
        out.append(FieldViolation("method", "must be one of " + ",".join(sorted(_METHODS))))
    out.extend(
        FieldViolation("allow_header", f"{header[:64]!r} cannot be allowed")
        for header in spec.allow_headers
        if not _HEADER.fullmatch(header) or header in _FORBIDDEN_HEADERS
    )
    if not 0 < spec.timeout <= MAX_TIMEOUT:
        out.append(FieldViolation("timeout", f"must be more than 0 and at most {MAX_TIMEOUT:g}"))
    if not 0 < spec.max_response_bytes <= MAX_RESPONSE_BYTES:
        out.append(FieldViolation("max_response_bytes", f"must be 1 to {MAX_RESPONSE_BYTES} bytes"))
    for path in spec.tokenize_paths:
        try:
            parse_path(path)
        except ValueError:
            out.append(FieldViolation("tokenize_path", "must be dot-separated JSON keys or *"))
    out += _pem_violations(spec)
    if out:
        raise InvalidArgumentError(out, reason="BAD_ROUTE")


def _label(name: str) -> bytes:
    """Binds a sealed client key to its route: copied to another route, it fails to open."""
    return b"route-client-key\x00" + name.encode()


class RouteSecrets:
    """Seals and opens routes' client keys under the service key route-secrets:1."""

    __slots__ = ("_aead",)

    def __init__(self, service_key: SecretBytes) -> None:
        self._aead = RecordKey(0, service_key)

    def __repr__(self) -> str:
        return "RouteSecrets(<redacted>)"

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("RouteSecrets cannot be pickled")

    @classmethod
    async def open(
        cls, store: WrappedKeyStore, kek: KekProvider, clock: Clock, *, create: bool
    ) -> RouteSecrets | None:
        """Unwrap the service key; with ``create``, make it on first use. None if absent."""
        label = ROUTE_SECRETS_KEY_NAME.encode()
        wrapped = await store.service_key(ROUTE_SECRETS_KEY_NAME)
        if wrapped is None:
            if not create:
                return None
            candidate = kek.wrap(new_data_key(), label)
            wrapped = await store.put_service_key(
                ROUTE_SECRETS_KEY_NAME, candidate, kek.kek_id, clock.now()
            )
        return cls(kek.unwrap(wrapped, label))

    def seal(self, route: str, key_pem: SecretBytes) -> bytes:
        return self._aead.encrypt(key_pem.reveal(), _label(route))

    def unseal(self, route: str, sealed: bytes) -> SecretBytes:
        return SecretBytes(self._aead.decrypt(sealed, _label(route)))


def route_from_row(row: RouteRow, secrets: RouteSecrets | None) -> Route:
    """The route a server uses; its client key unsealed (FAILED_PRECONDITION without
    the service key)."""
    key = None
    if row.client_key_sealed is not None:
        if secrets is None:
            raise FailedPreconditionError(
                "a route's client key is sealed under a missing service key",
                reason="ROUTE_SECRETS_MISSING",
            )
        key = secrets.unseal(row.name, row.client_key_sealed)
    return Route(
        name=row.name,
        url=row.url,
        method=row.method,
        ca_pem=row.ca_pem,
        client_cert_pem=row.client_cert_pem,
        client_key=key,
        allow_headers=frozenset(row.allow_headers),
        timeout=row.timeout,
        max_response_bytes=row.max_response_bytes,
        tokenize_paths=row.tokenize_paths,
        revision=row.revision,
    )


class RouteAdministration:
    """The route use cases, as ``actor`` (the operator the trail names). Every change is
    recorded; a vault that cannot record it makes none (the trail is opened first)."""

    def __init__(
        self,
        store: RouteStore,
        clock: Clock,
        open_trail: Callable[[], Awaitable[EventRecorder]],
        open_secrets: Callable[[], Awaitable[RouteSecrets]],
        actor: str,
    ) -> None:
        self._store = store
        self._clock = clock
        self._open_trail = open_trail
        self._open_secrets = open_secrets
        self._actor = actor

    async def list(self) -> list[RouteRow]:
        return await self._store.routes()

    async def add(self, spec: RouteSpec) -> None:
        """Add (or replace) the route, after checking it."""
        check_spec(spec)
        trail = await self._open_trail()
        sealed = None
        if spec.client_key_pem is not None:
            sealed = (await self._open_secrets()).seal(spec.name, spec.client_key_pem)
        row = RouteRow(
            name=spec.name,
            url=spec.url,
            method=spec.method,
            ca_pem=spec.ca_pem,
            client_cert_pem=spec.client_cert_pem,
            client_key_sealed=sealed,
            allow_headers=tuple(dict.fromkeys(spec.allow_headers)),
            timeout=spec.timeout,
            max_response_bytes=spec.max_response_bytes,
            tokenize_paths=tuple(dict.fromkeys(spec.tokenize_paths)),
            created_at=self._clock.now(),
        )
        await self._store.put_route(row)
        await self._record(trail, ACTION_ROUTE_ADD, spec.audit_detail())

    async def remove(self, name: str) -> None:
        """Remove the route and every caller's permission to use it."""
        trail = await self._open_trail()
        if not await self._store.remove_route(name):
            raise NotFoundError("no route with that name", reason="ROUTE_NOT_FOUND")
        await self._record(trail, ACTION_ROUTE_REMOVE, {"name": name})

    async def allow(self, route: str, callers: Sequence[str], known: Sequence[str]) -> None:
        """Let existing callers (``known``: every caller's name) forward on the route."""
        trail = await self._open_trail()
        if route not in {r.name for r in await self._store.routes()}:
            raise NotFoundError("no route with that name", reason="ROUTE_NOT_FOUND")
        if not set(callers) <= set(known):
            raise NotFoundError("no caller with that name", reason="CALLER_NOT_FOUND")
        for caller in callers:
            await self._store.allow_routes(caller, [route], self._clock.now())
        await self._record(trail, ACTION_ROUTE_ALLOW, {"name": route, "callers": ",".join(callers)})

    async def _record(self, trail: EventRecorder, action: str, detail: dict[str, str]) -> None:
        event = AuditEvent(
            self._clock.now(), self._actor, "", action, outcome=OUTCOME_OK, detail=detail
        )
        await trail.record([event])
