"""The one construction point of the domain graph: every use case, with the shared
pieces (codec, validator, reveal policy, CVC memory, audit writer) built once."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from vault.audit.base import AuditSink
from vault.audit.volume import DEFAULT_WINDOW, TokenizeVolume
from vault.clock import Clock
from vault.domain import kinds
from vault.domain.auditing import UseCaseAudit
from vault.domain.codec import RecordCodec
from vault.domain.corrections import Corrections
from vault.domain.cvc import CvcHandling
from vault.domain.describe import Describe
from vault.domain.ephemeral import EphemeralStore
from vault.domain.keys import KeyMaterial
from vault.domain.reading import TokenReader
from vault.domain.reveal import Reveal
from vault.domain.reveal_policy import RevealPolicy
from vault.domain.subject_keys import SubjectKeys
from vault.domain.subjects import SubjectRequests
from vault.domain.tokenize import PanTokenGenerator, Tokenize, TokenizeRules
from vault.domain.validation import Limits, Validator
from vault.storage.base import AuditStore, SubjectStore, TokenStore

__all__ = ["DomainStore", "UseCases", "build_use_cases"]


class DomainStore(TokenStore, SubjectStore, AuditStore, Protocol):
    """The storage aggregates the token and subject use cases read and write; each use
    case is handed only the one(s) it needs."""


@dataclass(frozen=True, slots=True)
class UseCases:
    """The use cases of one vault process (and the pieces a caller may need to see)."""

    tokenize: Tokenize
    reveal: Reveal
    describe: Describe
    corrections: Corrections
    subjects: SubjectRequests
    cvc: CvcHandling
    codec: RecordCodec
    limits: Limits
    # The CVC memory (held values, short TTL): one per process, shared by the above.
    ephemeral: EphemeralStore

    def __repr__(self) -> str:
        return "UseCases()"

    async def purge_expired(self, limit: int = 1000) -> int:
        """Delete expired tokens and drop expired CVCs (see Describe.purge_expired)."""
        return await self.describe.purge_expired(limit)

    async def close(self) -> None:
        """On stop: write the tokenize volume still counted into the audit trail."""
        await self.tokenize.volume.close()


def build_use_cases(
    store: DomainStore,
    keys: KeyMaterial,
    clock: Clock,
    limits: Limits | None = None,
    *,
    audit: AuditSink | None = None,
    on_encrypt: Callable[[int, int], None] | None = None,
    subject_keys: SubjectKeys | None = None,
    new_pan_token: PanTokenGenerator = kinds.new_pan_token,
    cvc_memory: EphemeralStore | None = None,
    tokenize_rules: TokenizeRules | None = None,
    volume_window: float = DEFAULT_WINDOW,
) -> UseCases:
    """Build the use cases. ``audit`` is None only where nothing is served (the
    in-process benchmark); ``subject_keys`` None where no subject is ever given;
    ``new_pan_token`` is the CSPRNG generator except in tests; ``cvc_memory`` is the
    CVC memory with the configured budget (an unbounded-default one if None);
    ``tokenize_rules`` the configured minimum TTL and tokenize budget (None: neither);
    ``volume_window`` the seconds of tokenize volume summed into one audit record."""
    limits = limits or Limits()
    validator = Validator(limits)
    codec = RecordCodec(keys, subject_keys)
    policy = RevealPolicy(clock)
    ephemeral = EphemeralStore(clock) if cvc_memory is None else cvc_memory
    cvc = CvcHandling(ephemeral, limits)
    writer = UseCaseAudit(audit, clock, limits)
    reader = TokenReader(store, store, keys, clock)
    return UseCases(
        tokenize=Tokenize(
            store,
            keys,
            codec,
            validator,
            cvc,
            clock,
            on_encrypt=on_encrypt,
            new_pan_token=new_pan_token,
            rules=tokenize_rules,
            volume=TokenizeVolume(audit, clock, volume_window),
        ),
        reveal=Reveal(reader, codec, policy, cvc, validator, writer, clock),
        describe=Describe(store, reader, codec, keys, cvc, writer, clock),
        corrections=Corrections(store, reader, codec, keys, validator, cvc, writer, clock),
        subjects=SubjectRequests(store, codec, policy, validator, cvc, keys, clock, audit),
        cvc=cvc,
        codec=codec,
        limits=limits,
        ephemeral=ephemeral,
    )
