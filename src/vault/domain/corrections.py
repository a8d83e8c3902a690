"""Corrections: UpdateToken replaces a stored token's value in place (the token stays the
same) with new ciphertext and fingerprint, by compare-and-set against a concurrent
rewrap; a PAN token's new card must keep the digits the token shows."""

from __future__ import annotations

from collections.abc import Mapping

from vault.audit.base import ACTION_UPDATE
from vault.auth.policy import (
    SCOPE_TOKENIZE,
    SCOPE_TOKENIZE_DETERMINISTIC,
    Caller,
    shown_fingerprint,
)
from vault.auth.policy import require as require_scope
from vault.clock import Clock
from vault.crypto.keyring import Fingerprinter
from vault.domain import kinds
from vault.domain.auditing import NO_CONTEXT, UseCaseAudit
from vault.domain.codec import KINDS, RecordCodec, encode_payload
from vault.domain.cvc import CvcHandling
from vault.domain.keys import KeyMaterial
from vault.domain.model import DataKind, RequestContext, TokenFormat, Value
from vault.domain.reading import TokenReader
from vault.domain.results import Tokenized
from vault.domain.tokenize import KIND_DOMAINS
from vault.domain.validation import Validator
from vault.errors import (
    AlreadyExistsError,
    PermissionDeniedError,
    UnavailableError,
    VaultError,
)
from vault.storage.base import TokenStore, TokenUpdate, UpdateStatus

__all__ = ["Corrections"]

# Attempts at a correction that loses its compare-and-set to a concurrent rewrap.
_UPDATE_ATTEMPTS = 3


class Corrections:
    """The UpdateToken use case."""

    def __init__(
        self,
        tokens: TokenStore,
        reader: TokenReader,
        codec: RecordCodec,
        keys: KeyMaterial,
        validator: Validator,
        cvc: CvcHandling,
        audit: UseCaseAudit,
        clock: Clock,
    ) -> None:
        self._tokens = tokens
        self._reader = reader
        self._codec = codec
        self._keys = keys
        self._validator = validator
        self._cvc = cvc
        self._audit = audit
        self._clock = clock

    def __repr__(self) -> str:
        return "Corrections()"

    async def update_token(
        self,
        caller: Caller,
        token: str,
        value: Value | None,
        metadata: Mapping[str, str] | None,
        *,
        request: RequestContext | None = None,
    ) -> Tokenized:
        """Correct the value of a stored token in place: new ciphertext and fingerprint;
        ``metadata`` replaces the labels unless None."""
        ctx = request or NO_CONTEXT
        try:
            require_scope(caller, SCOPE_TOKENIZE)
            kinds.validate_token_string(token, "token")
            self._cvc.refuse_correction(caller, token)
            for _attempt in range(_UPDATE_ATTEMPTS):
                result = await self._update_once(caller, token, value, metadata)
                if result is not None:
                    break
            else:
                raise UnavailableError(
                    "the token kept changing during the update; retry", reason="UPDATE_CONFLICT"
                )
        except VaultError as exc:
            await self._audit.refusal(caller, ACTION_UPDATE, [token], "", ctx, exc)
            raise
        tokenized, kind = result
        await self._audit.completed(
            caller,
            ACTION_UPDATE,
            token,
            ctx,
            kind=kind.name,
            metadata_replaced=str(metadata is not None).lower(),
        )
        return tokenized

    async def _update_once(
        self,
        caller: Caller,
        token: str,
        value: Value | None,
        metadata: Mapping[str, str] | None,
    ) -> tuple[Tokenized, DataKind] | None:
        """One compare-and-set attempt; None when the row changed meanwhile."""
        (row,) = await self._reader.load(caller, [token], "token")
        if row.deterministic and SCOPE_TOKENIZE_DETERMINISTIC not in caller.scopes:
            # DETERMINISTIC_COLLISION would answer "another token holds this value".
            raise PermissionDeniedError(
                "a deterministic token is corrected only with the "
                f"{SCOPE_TOKENIZE_DETERMINISTIC} scope",
                reason="DETERMINISTIC_NOT_ALLOWED",
            )
        kind, fmt = KINDS[row.kind], TokenFormat(row.token_format)
        normal = self._validator.check_correction(kind, fmt, token, value, metadata)
        skeys = await self._codec.subject_keys_for([row])
        old = self._codec.open(row, skeys)
        canon = kinds.canonical_bytes(kind, normal)
        fp = await self._keys.fingerprinter(row.tenant)
        fingerprint = fp.digest(KIND_DOMAINS[kind], canon)
        payload = encode_payload(
            canon, old.subject, dict(metadata) if metadata is not None else old.metadata
        )
        skey = None
        if row.subject_ref is not None:
            skey = skeys.get(row.subject_ref) or await self._codec.subject_key_for_write(
                row.tenant, row.subject_ref
            )
        sealed = self._codec.seal(row.tenant, row.kind, row.token_format, token, payload, skey)
        status = await self._tokens.update_token(
            TokenUpdate(
                token=token,
                tenant=row.tenant,
                old_version=row.key_version,
                old_ciphertext=row.ciphertext,
                new_version=sealed.key_version,
                new_ciphertext=sealed.ciphertext,
                new_fingerprint=skey.bind(fingerprint) if skey is not None else fingerprint,
                now=self._clock.now(),
            )
        )
        if status is UpdateStatus.CHANGED:
            return None
        if status is UpdateStatus.DETERMINISTIC_EXISTS:
            raise AlreadyExistsError(
                "another deterministic token already holds this value",
                reason="DETERMINISTIC_COLLISION",
            )
        tokenized = Tokenized(
            token=token,
            fingerprint=shown_fingerprint(caller, Fingerprinter.encode(fingerprint)),
            masked=kinds.mask(kind, normal),
            created=False,
            expires_at=row.expires_at,
        )
        return tokenized, kind
