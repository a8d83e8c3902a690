"""Who a caller is and what it may do. Default deny: a scope not granted is refused."""

from __future__ import annotations

from dataclasses import dataclass

from vault.errors import PermissionDeniedError
from vault.storage.base import CallerRow

__all__ = [
    "ALL_SCOPES",
    "SCOPE_AUDIT",
    "SCOPE_DETOKENIZE",
    "SCOPE_FINGERPRINT",
    "SCOPE_FORWARD",
    "SCOPE_KEYS",
    "SCOPE_REVEAL_MASKED",
    "SCOPE_SUBJECTS",
    "SCOPE_TOKENIZE",
    "SCOPE_TOKENIZE_DETERMINISTIC",
    "Caller",
    "caller_from_row",
    "parse_scopes",
    "require",
    "require_any",
    "shown_fingerprint",
]

SCOPE_TOKENIZE = "tokenize"  # create and delete tokens
SCOPE_DETOKENIZE = "detokenize"  # reveal values (with a purpose)
SCOPE_REVEAL_MASKED = "reveal-masked"  # token metadata and masked value, no reveal
SCOPE_SUBJECTS = "subjects"  # data-subject requests
SCOPE_KEYS = "keys"  # key lifecycle
SCOPE_AUDIT = "audit"  # read the audit trail
SCOPE_FORWARD = "forward"  # ForwardService: send revealed values to a configured route
# See a value's tenant-wide fingerprint (Tokenize, BatchTokenize, GetToken, UpdateToken).
# A fingerprint is an equality oracle: with a PAN token's BIN and last four, tokenizing the
# ~10^5 Luhn-valid candidates and comparing fingerprints finds the card, so this scope is
# close to a reveal and is never implied by tokenize or reveal-masked.
SCOPE_FINGERPRINT = "fingerprint"
# Ask for deterministic tokens (the same value returns the same token: the same oracle as
# a fingerprint, answered by `created: false`).
SCOPE_TOKENIZE_DETERMINISTIC = "tokenize-deterministic"

ALL_SCOPES = (
    SCOPE_TOKENIZE,
    SCOPE_DETOKENIZE,
    SCOPE_REVEAL_MASKED,
    SCOPE_SUBJECTS,
    SCOPE_KEYS,
    SCOPE_AUDIT,
    SCOPE_FORWARD,
    SCOPE_FINGERPRINT,
    SCOPE_TOKENIZE_DETERMINISTIC,
)


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated caller: its name, its tenant, what it may do."""

    name: str
    tenant: str
    scopes: frozenset[str]
    # DataKind names it may reveal (with the detokenize scope); empty = every kind.
    reveal_kinds: frozenset[str] = frozenset()
    reveal_rate: float = 0.0  # reveals per second; 0 = unlimited
    reveal_burst: int = 0  # reveals at once; 0 = max(1, rate)
    # Tokenize budget, in items (a batch of 100 spends 100); None = the configured default
    # (tokenize_rate, tokenize_burst), rate 0 = no budget.
    tokenize_rate: float | None = None
    tokenize_burst: int | None = None

    def may_reveal(self, kind_name: str) -> bool:
        return not self.reveal_kinds or kind_name in self.reveal_kinds


def caller_from_row(row: CallerRow) -> Caller:
    return Caller(
        row.name,
        row.tenant,
        frozenset(row.scopes),
        frozenset(row.reveal_kinds),
        row.reveal_rate,
        row.reveal_burst,
        row.tokenize_rate,
        row.tokenize_burst,
    )


def parse_scopes(text: str) -> tuple[str, ...]:
    """Comma-separated scopes, each a known one; raises ValueError naming no input."""
    scopes = tuple(dict.fromkeys(s.strip() for s in text.split(",") if s.strip()))
    unknown = [s for s in scopes if s not in ALL_SCOPES]
    if unknown or not scopes:
        raise ValueError("scopes must be a comma-separated subset of " + ",".join(ALL_SCOPES))
    return scopes


def require(caller: Caller, scope: str) -> None:
    if scope not in caller.scopes:
        raise PermissionDeniedError(f"the caller lacks the {scope} scope", reason="MISSING_SCOPE")


def require_any(caller: Caller, *scopes: str) -> None:
    if caller.scopes.isdisjoint(scopes):
        raise PermissionDeniedError(
            f"the caller lacks the {' or '.join(scopes)} scope", reason="MISSING_SCOPE"
        )


def shown_fingerprint(caller: Caller, fingerprint: str) -> str:
    """The fingerprint as the caller may see it: itself with the fingerprint scope, else
    empty (the field is left unset)."""
    return fingerprint if SCOPE_FINGERPRINT in caller.scopes else ""
