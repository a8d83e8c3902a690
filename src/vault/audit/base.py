"""What the use cases hand the audit trail: events, and the sink that makes them durable.

An event never carries a value, a masked value, an API key or key material. Tokens are
allowed: a token reveals nothing without the vault.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol

__all__ = [
    "ACTION_AUTHENTICATE",
    "ACTION_AUTHORIZE",
    "ACTION_CALLER_ADD",
    "ACTION_CALLER_REVOKE",
    "ACTION_DELETE",
    "ACTION_FORWARD",
    "ACTION_KEY_RETIRE",
    "ACTION_KEY_REWRAP",
    "ACTION_KEY_ROTATE",
    "ACTION_KEY_STATUS",
    "ACTION_RETENTION_CLEAR",
    "ACTION_RETENTION_PURGE",
    "ACTION_RETENTION_SET",
    "ACTION_REVEAL",
    "ACTION_ROUTE_ADD",
    "ACTION_ROUTE_ALLOW",
    "ACTION_ROUTE_REMOVE",
    "ACTION_SUBJECT_ERASE",
    "ACTION_SUBJECT_EXPORT",
    "ACTION_SUBJECT_HOLD",
    "ACTION_SUBJECT_RELEASE",
    "ACTION_UPDATE",
    "OUTCOME_DENIED",
    "OUTCOME_ERROR",
    "OUTCOME_OK",
    "AuditEvent",
    "AuditSink",
]

ACTION_REVEAL = "token.reveal"  # Detokenize / BatchDetokenize, one event per token
ACTION_DELETE = "token.delete"  # DeleteToken
ACTION_AUTHENTICATE = "auth.authenticate"  # a credential was refused
ACTION_AUTHORIZE = "auth.authorize"  # a caller lacked the permission for a method
ACTION_CALLER_ADD = "caller.add"  # vaultctl callers add
ACTION_CALLER_REVOKE = "caller.revoke"  # vaultctl callers revoke
ACTION_KEY_ROTATE = "key.rotate"  # vaultctl keys rotate, RotateKey, or the vault itself
ACTION_KEY_REWRAP = "key.rewrap"  # vaultctl keys rewrap, RewrapKeys
ACTION_KEY_RETIRE = "key.retire"  # vaultctl keys retire, RetireKeyVersion
ACTION_KEY_STATUS = "key.status"  # KeyService.GetKeyStatus
ACTION_UPDATE = "token.update"  # UpdateToken: a value corrected in place
# Data-subject requests name the subject by its subject_ref (an HMAC), never by its id:
# the trail is append-only and outlives an erasure, the id is personal data.
ACTION_SUBJECT_EXPORT = "subject.export"  # ExportSubject / vaultctl subjects export
ACTION_SUBJECT_ERASE = "subject.erase"  # EraseSubject / vaultctl subjects erase
ACTION_SUBJECT_HOLD = "subject.hold"  # SetLegalHold(hold=true) / vaultctl subjects hold
ACTION_SUBJECT_RELEASE = "subject.release"  # SetLegalHold(hold=false) / subjects release
ACTION_RETENTION_SET = "retention.set"  # vaultctl retention set
ACTION_RETENTION_CLEAR = "retention.clear"  # vaultctl retention clear
ACTION_RETENTION_PURGE = "retention.purge"  # the retention job removed values (counts)
ACTION_FORWARD = "token.forward"  # ForwardService/Forward: one event per forward (its tokens)
ACTION_ROUTE_ADD = "route.add"  # vaultctl routes add (or a replaced route)
ACTION_ROUTE_REMOVE = "route.remove"  # vaultctl routes remove
ACTION_ROUTE_ALLOW = "route.allow"  # vaultctl routes allow (callers add --routes: caller.add)

OUTCOME_OK = "ok"  # done
OUTCOME_DENIED = "denied"  # refused: credential, permission, or a token the caller cannot see
OUTCOME_ERROR = "error"  # failed: bad input or the vault could not serve it

_NO_DETAIL: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class AuditEvent:
    time: float  # unix seconds
    caller: str  # authenticated caller name; "" when authentication failed
    tenant: str  # the caller's tenant; "" when unknown
    action: str  # one of the ACTION_* names
    tokens: tuple[str, ...] = ()  # the token(s) acted on, never values
    purpose: str = ""  # the reason given for a reveal
    outcome: str = OUTCOME_OK  # OUTCOME_*
    reason: str = ""  # UPPER_SNAKE reason code when the outcome is not ok
    request_id: str = ""  # x-request-id of the call, or one the API layer made up
    peer: str = ""  # network peer of the call
    # Non-sensitive facts: counts, method, data kind. Shared empty default, never mutated.
    detail: Mapping[str, str] = field(default_factory=lambda: _NO_DETAIL)


class AuditSink(Protocol):
    async def record(self, events: Sequence[AuditEvent]) -> None:
        """Make the events durable, in order, or raise: returns only once they are."""
        ...
