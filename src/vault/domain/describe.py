"""Describe and delete: GetToken (metadata and masked value, no reveal), DeleteToken,
and the purge of expired tokens.

GetToken answers a `reveal-masked` caller with what a masked view needs (kind, format,
masked value, dates). The subject id and the metadata say whose value it is and what it
was for: they are personal data, returned only to a caller that could read them anyway,
one holding `subjects` (ExportSubject returns them) or `detokenize` for the token's kind
(Detokenize returns them).
"""

from __future__ import annotations

import dataclasses

from vault import metrics
from vault.audit.base import ACTION_DELETE
from vault.auth.policy import (
    SCOPE_DETOKENIZE,
    SCOPE_FINGERPRINT,
    SCOPE_REVEAL_MASKED,
    SCOPE_SUBJECTS,
    SCOPE_TOKENIZE,
    Caller,
)
from vault.auth.policy import require as require_scope
from vault.auth.policy import require_any as require_any_scope
from vault.clock import Clock
from vault.crypto.keyring import Fingerprinter
from vault.domain import kinds
from vault.domain.auditing import NO_CONTEXT, UseCaseAudit
from vault.domain.codec import RecordCodec
from vault.domain.cvc import CvcHandling
from vault.domain.keys import KeyMaterial
from vault.domain.model import DataKind, RequestContext, TokenFormat
from vault.domain.reading import TokenReader
from vault.domain.results import TokenInfo
from vault.domain.tokenize import KIND_DOMAINS
from vault.errors import NotFoundError, VaultError
from vault.storage.base import TokenStore

__all__ = ["Describe", "shows_owner"]


def shows_owner(caller: Caller, kind: DataKind) -> bool:
    """Whether GetToken shows the caller a token's subject and metadata: only to one
    that may read them through another method (ExportSubject, or Detokenize of the kind)."""
    if SCOPE_SUBJECTS in caller.scopes:
        return True
    return SCOPE_DETOKENIZE in caller.scopes and caller.may_reveal(kind.name)


def _as_seen_by(caller: Caller, info: TokenInfo) -> TokenInfo:
    """``info`` without its subject and metadata unless the caller may see them."""
    if shows_owner(caller, info.kind) or not (info.subject or info.metadata):
        return info
    return dataclasses.replace(info, subject="", metadata={})


class Describe:
    """GetToken, DeleteToken and the purge of expired tokens."""

    def __init__(
        self,
        tokens: TokenStore,
        reader: TokenReader,
        codec: RecordCodec,
        keys: KeyMaterial,
        cvc: CvcHandling,
        audit: UseCaseAudit,
        clock: Clock,
    ) -> None:
        self._tokens = tokens
        self._reader = reader
        self._codec = codec
        self._keys = keys
        self._cvc = cvc
        self._audit = audit
        self._clock = clock

    def __repr__(self) -> str:
        return "Describe()"

    async def get_token(self, caller: Caller, token: str) -> TokenInfo:
        require_any_scope(caller, SCOPE_REVEAL_MASKED, SCOPE_DETOKENIZE)
        held = self._cvc.describe(caller, token)
        if held is not None:
            return _as_seen_by(caller, held)
        (row,) = await self._reader.load(caller, [token], "token")
        opened = self._codec.open(row, await self._codec.subject_keys_for([row]))
        kind, value = opened.kind, opened.value
        # Only to a caller with the fingerprint scope: an equality oracle (see policy).
        fingerprint = b""
        if SCOPE_FINGERPRINT in caller.scopes:
            fingerprint = row.fingerprint
            if row.subject_ref is not None:
                # A subject's row stores its fingerprint bound to the subject key; the
                # caller sees the tenant-wide one, as tokenize returned it.
                fp = await self._keys.fingerprinter(row.tenant)
                fingerprint = fp.digest(KIND_DOMAINS[kind], kinds.canonical_bytes(kind, value))
        info = TokenInfo(
            token=row.token,
            kind=kind,
            token_format=TokenFormat(row.token_format),
            masked=kinds.mask(kind, value),
            fingerprint=Fingerprinter.encode(fingerprint) if fingerprint else "",
            subject=opened.subject,
            metadata=opened.metadata,
            deterministic=row.deterministic,
            created_at=row.created_at,
            expires_at=row.expires_at,
            key_version=row.key_version,
        )
        return _as_seen_by(caller, info)

    async def delete_token(
        self, caller: Caller, token: str, *, request: RequestContext | None = None
    ) -> None:
        ctx = request or NO_CONTEXT
        try:
            require_scope(caller, SCOPE_TOKENIZE)
            if not self._cvc.remove(caller, token):
                # Expired but not yet purged counts as gone, as for every other read.
                await self._reader.load(caller, [token], "token")
                if not await self._tokens.delete_token(caller.tenant, token):
                    raise NotFoundError("token not found", reason="TOKEN_NOT_FOUND")
        except VaultError as exc:
            await self._audit.refusal(caller, ACTION_DELETE, [token], "", ctx, exc)
            raise
        await self._audit.completed(caller, ACTION_DELETE, token, ctx)

    async def purge_expired(self, limit: int = 1000) -> int:
        """Delete expired tokens, up to ``limit`` per store transaction, until none is left
        (and drop expired CVCs from memory)."""
        total = self._cvc.purge()
        while True:
            n = await self._tokens.purge_expired(self._clock.now(), limit)
            total += n
            if n < limit:
                break
        if total:
            metrics.TOKENS_PURGED.inc(total)
        return total
