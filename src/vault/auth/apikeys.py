"""API keys: ``vk_<key id>_<secret>``. The key id finds the caller; only a SHA-256 of the
secret is stored. The secret has 256 random bits, so a fast hash is enough (no password
stretching is needed for keys nobody chose).

The Authenticator also names callers by mTLS certificate identity (see ``auth.mtls``):
the transport has verified the certificate, so the identity is only looked up.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from vault.audit.refusals import RefusalLog
from vault.auth.mtls import MAX_IDENTITY_CHARS
from vault.auth.policy import Caller, caller_from_row
from vault.auth.ratelimit import PeerRefusalLimiter
from vault.clock import Clock
from vault.errors import UnauthenticatedError
from vault.storage.base import CallerRow, Store

__all__ = ["ApiKey", "Authenticator", "hash_secret", "mint_api_key", "parse_api_key"]

_KEY_RE = re.compile(r"vk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")
# Longest header value looked at; anything longer is refused before any parsing.
_MAX_KEY_CHARS = 128
# How long a looked-up caller is trusted before the store is asked again: a new or
# revoked caller takes effect within this many seconds.
CACHE_SECONDS = 2.0
# Most key ids remembered; garbage key ids must not grow memory without bound.
_CACHE_MAX = 10_000


@dataclass(frozen=True, slots=True)
class ApiKey:
    key_id: str
    secret: str

    def __repr__(self) -> str:
        return f"ApiKey(key_id={self.key_id!r}, secret=<redacted>)"

    @property
    def text(self) -> str:
        """The full key, shown once to whoever created it."""
        return f"vk_{self.key_id}_{self.secret}"


def mint_api_key() -> ApiKey:
    return ApiKey(secrets.token_hex(8), secrets.token_urlsafe(32))


def hash_secret(secret: str) -> bytes:
    return hashlib.sha256(b"vault api key\x00" + secret.encode()).digest()


def parse_api_key(text: str) -> ApiKey | None:
    if len(text) > _MAX_KEY_CHARS:
        return None
    match = _KEY_RE.fullmatch(text)
    return ApiKey(match.group(1), match.group(2)) if match else None


def _check_validity(row: CallerRow, now: float) -> None:
    if row.revoked_at is not None and row.revoked_at <= now:
        raise UnauthenticatedError("the credential is not valid", reason="REVOKED_CREDENTIAL")
    if row.expires_at is not None and row.expires_at <= now:
        raise UnauthenticatedError("the credential is not valid", reason="EXPIRED_CREDENTIAL")


class Authenticator:
    """Turns an ``authorization`` header, or failing that a verified client certificate's
    identity, into a Caller; or refuses it.

    It is the vault's front door, so it also holds what refusals cost: ``refusals``
    tallies them into the audit trail, ``limiter`` throttles peers refused too often.
    """

    def __init__(
        self,
        store: Store,
        clock: Clock,
        *,
        refusals: RefusalLog | None = None,
        limiter: PeerRefusalLimiter | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self.refusals = refusals if refusals is not None else RefusalLog(clock)
        self.limiter = limiter if limiter is not None else PeerRefusalLimiter(clock)
        # key id -> (row or None, monotonic time it was read)
        self._cache: dict[str, tuple[CallerRow | None, float]] = {}
        # certificate identity -> (row or None, monotonic time it was read)
        self._by_identity: dict[str, tuple[CallerRow | None, float]] = {}
        # SHA-256 of a header that authenticated -> (caller, its key's expiry, when
        # verified): the hot path is one hash and one lookup. Keyed by a hash so no
        # key is kept in memory longer than its request.
        self._verified: dict[bytes, tuple[Caller, float | None, float]] = {}

    def __repr__(self) -> str:
        return "Authenticator()"

    @staticmethod
    async def _cached(
        cache: dict[str, tuple[CallerRow | None, float]],
        key: str,
        fetch: Callable[[str], Awaitable[CallerRow | None]],
    ) -> CallerRow | None:
        """A caller row (or its absence) trusted for CACHE_SECONDS, then asked again."""
        mono = time.monotonic()
        hit = cache.get(key)
        if hit is not None and mono - hit[1] < CACHE_SECONDS:
            return hit[0]
        row = await fetch(key)
        if len(cache) > _CACHE_MAX:
            cache.clear()
        cache[key] = (row, mono)
        return row

    async def _lookup(self, key_id: str) -> CallerRow | None:
        return await self._cached(self._cache, key_id, self._store.caller_by_key_id)

    async def _lookup_identity(self, identity: str) -> CallerRow | None:
        return await self._cached(self._by_identity, identity, self._store.caller_by_cert_identity)

    def recognizes(self, authorization: str | None, cert_identity: str | None = None) -> bool:
        """Is this a credential the vault knows already (a header that authenticated, or
        the key id or certificate identity of a caller read from the store), without
        asking the store? A throttled peer gets through with such a credential only."""
        if authorization:
            if len(authorization) > _MAX_KEY_CHARS + 16:
                return False
            if hashlib.sha256(authorization.encode()).digest() in self._verified:
                return True
            key = parse_api_key(authorization.partition(" ")[2].strip())
            hit = self._cache.get(key.key_id) if key is not None else None
            return hit is not None and hit[0] is not None
        hit = self._by_identity.get(cert_identity) if cert_identity else None
        return hit is not None and hit[0] is not None

    async def authenticate(
        self, authorization: str | None, cert_identity: str | None = None
    ) -> Caller:
        """The caller of a call. A Bearer key wins when one is sent (a bad one is refused,
        whatever certificate came with it); otherwise the identity of the client
        certificate the transport verified, bound with ``callers add --cert-identity``."""
        if not authorization:
            if cert_identity:
                return await self._by_certificate(cert_identity)
            raise UnauthenticatedError("a credential is required", reason="NO_CREDENTIAL")
        if len(authorization) > _MAX_KEY_CHARS + 16:
            raise UnauthenticatedError("the credential is not valid", reason="BAD_CREDENTIAL")
        digest = hashlib.sha256(authorization.encode()).digest()
        hit = self._verified.get(digest)
        if hit is not None and time.monotonic() - hit[2] < CACHE_SECONDS:
            caller, expires_at, _ = hit
            if expires_at is None or expires_at > self._clock.now():
                return caller
        caller, expires_at = await self._verify(authorization)
        if len(self._verified) > _CACHE_MAX:
            self._verified.clear()
        self._verified[digest] = (caller, expires_at, time.monotonic())
        return caller

    async def _verify(self, authorization: str) -> tuple[Caller, float | None]:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise UnauthenticatedError("the credential is not valid", reason="BAD_CREDENTIAL")
        key = parse_api_key(token.strip())
        if key is None:
            raise UnauthenticatedError("the credential is not valid", reason="BAD_CREDENTIAL")
        row = await self._lookup(key.key_id)
        if (
            row is None
            or row.key_hash is None
            or not hmac.compare_digest(row.key_hash, hash_secret(key.secret))
        ):
            raise UnauthenticatedError("the credential is not valid", reason="BAD_CREDENTIAL")
        _check_validity(row, self._clock.now())
        return caller_from_row(row), row.expires_at

    async def _by_certificate(self, identity: str) -> Caller:
        # Typed (uri:/cn:, see auth.mtls): an untyped name is never looked up.
        if len(identity) > MAX_IDENTITY_CHARS + 4 or not identity.startswith(("uri:", "cn:")):
            raise UnauthenticatedError("the credential is not valid", reason="BAD_CREDENTIAL")
        row = await self._lookup_identity(identity)
        if row is None:
            raise UnauthenticatedError(
                "the certificate is not bound to a caller", reason="UNKNOWN_CERT_IDENTITY"
            )
        _check_validity(row, self._clock.now())
        return caller_from_row(row)
