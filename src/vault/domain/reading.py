"""Loading live token rows for a caller: the token strings checked, another tenant's row
answered exactly like a missing one, an expired row gone unless its subject is held."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from vault.auth.policy import Caller
from vault.clock import Clock
from vault.domain import kinds
from vault.domain.keys import KeyMaterial
from vault.errors import InvalidArgumentError, NotFoundError
from vault.storage.base import TokenRecord, TokenStore

__all__ = ["HoldLookup", "TokenReader"]


class HoldLookup(Protocol):
    """The one question a read asks of the subject store (see SubjectStore)."""

    async def subject_held(self, tenant: str, subject_ref: bytes) -> bool: ...


class TokenReader:
    """Reads rows of the caller's tenant, in order; NOT_FOUND for any other."""

    def __init__(
        self, tokens: TokenStore, holds: HoldLookup, keys: KeyMaterial, clock: Clock
    ) -> None:
        self._tokens = tokens
        self._holds = holds
        self._keys = keys
        self._clock = clock

    def __repr__(self) -> str:
        return "TokenReader()"

    async def load(
        self, caller: Caller, tokens: Sequence[str], field_name: str
    ) -> list[TokenRecord]:
        """Live rows of the caller's tenant, in order; ``field_name`` "tokens" names each
        violation tokens[i]."""
        batch = field_name == "tokens"
        violations = []
        for i, token in enumerate(tokens):
            try:
                kinds.validate_token_string(token, f"tokens[{i}]" if batch else field_name)
            except InvalidArgumentError as exc:
                violations.extend(exc.violations)
        if violations:
            raise InvalidArgumentError(violations)
        rows = await self._tokens.get_tokens(tokens)
        now = self._clock.now()
        found: list[TokenRecord] = []
        for i, row in enumerate(rows):
            if (
                row is None
                or row.tenant != caller.tenant
                or (not row.live(now) and not await self._held(row))
            ):
                where = f" (tokens[{i}])" if batch else ""
                raise NotFoundError(f"token not found{where}", reason="TOKEN_NOT_FOUND")
            found.append(row)
        keyring = self._keys.keyring
        if any(not keyring.has(row.key_version) for row in found):
            # A version newer than this process's keyring (a rotation, then a rewrap,
            # before the periodic refresh): reload now rather than fail the read.
            await self._keys.load()
        return found

    async def _held(self, row: TokenRecord) -> bool:
        """A subject under legal hold does not expire (its rows stay readable)."""
        return row.subject_ref is not None and await self._holds.subject_held(
            row.tenant, row.subject_ref
        )
