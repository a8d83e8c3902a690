"""The reveal policy, in one place: whether a caller may see values of a data kind, and
its reveal rate. Detokenize and a subject's export both go through it."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from vault.auth.policy import Caller
from vault.auth.ratelimit import RevealLimiter
from vault.clock import Clock
from vault.domain.model import DataKind
from vault.errors import PermissionDeniedError
from vault.storage.base import TokenRecord

__all__ = ["RevealPolicy"]

_KINDS = {int(k): k for k in DataKind}


class RevealPolicy:
    """A caller's data kinds and reveal rate (one unit per value shown)."""

    def __init__(self, clock: Clock, limiter: RevealLimiter | None = None) -> None:
        self._limiter = limiter or RevealLimiter(clock)

    def __repr__(self) -> str:
        return "RevealPolicy()"

    @staticmethod
    def check_kinds(caller: Caller, kinds: Iterable[DataKind]) -> None:
        """Refuse (KIND_NOT_ALLOWED) unless the caller may reveal every one of ``kinds``."""
        for kind in kinds:
            if not caller.may_reveal(kind.name):
                raise PermissionDeniedError(
                    "the caller may not reveal this data kind", reason="KIND_NOT_ALLOWED"
                )

    def take(self, caller: Caller, count: int) -> None:
        """Spend ``count`` reveals of the caller's rate (RESOURCE_EXHAUSTED past it)."""
        self._limiter.take(caller, count)

    def check_rows(self, caller: Caller, rows: Sequence[TokenRecord]) -> None:
        """For values shown other than by Detokenize (a subject's export): the kinds of
        every row, then the rate (one per row)."""
        self.check_kinds(caller, (_KINDS[row.kind] for row in rows))
        if rows:
            self.take(caller, len(rows))
