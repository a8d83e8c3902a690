"""Request validation, in one place: tokenize items, their extras (subject, metadata,
TTL, request id), batch sizes, purposes, reasons, corrections, the one rule of when a
value takes a PAN-shaped token, the one rule of what a subject id is (its normal form),
and the one rule for free text the vault keeps in clear (no card number in it). Every
check reports all violations at once, fields named.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field

from vault.domain import kinds
from vault.domain.ephemeral import cvc_metadata_violations
from vault.domain.model import ADDRESS_KINDS, DataKind, TokenFormat, Value
from vault.errors import FieldViolation, InvalidArgumentError

__all__ = [
    "Checked",
    "Limits",
    "TokenizeItem",
    "Validator",
    "check_free_text",
    "free_text_violation",
    "has_control",
    "normalize_subject",
    "recordable",
    "uses_pan_token",
]


@dataclass(frozen=True, slots=True)
class Limits:
    """Request limits; each is documented in the README's Limits table."""

    max_batch: int = 1000
    max_metadata_entries: int = 32
    max_metadata_key_chars: int = 64
    max_metadata_value_chars: int = 512
    max_subject_chars: int = 256
    max_request_id_chars: int = 128
    max_purpose_chars: int = 256
    max_reason_chars: int = 256  # of an erasure or a legal hold
    max_ttl_seconds: float = 100 * 366 * 86400.0
    # Attempts at drawing an unused PAN token before giving up (the space for a short
    # PAN with BIN and last four kept can be a few dozen tokens).
    max_token_attempts: int = 16
    # CVCs live in memory only: this long by default (ttl may ask for less, or more up to
    # the maximum), and this many reveals.
    cvc_ttl_seconds: float = 600.0
    cvc_max_ttl_seconds: float = 3600.0
    cvc_reveals: int = 1


# Not frozen: built once per item on the hot path, where a frozen init costs ~2x.
@dataclass(slots=True)
class TokenizeItem:
    kind: int
    value: Value | None
    token_format: int = TokenFormat.UNSPECIFIED
    deterministic: bool = False
    subject: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)
    ttl_seconds: float | None = None
    request_id: str = ""

    def __repr__(self) -> str:
        return f"TokenizeItem(kind={self.kind})"


# A validated item: its kind, resolved format and normalised value.
Checked = tuple[DataKind, TokenFormat, Value]

_METADATA_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")
_REQUEST_ID = re.compile(r"[\x21-\x7e]+")
_KINDS = {int(k): k for k in DataKind}
_PAN_FORMATS = frozenset({TokenFormat.PAN_LAST4, TokenFormat.PAN_BIN_LAST4})


def has_control(text: str) -> bool:
    """Whether the text has a control (or other category C) character."""
    return any(unicodedata.category(ch)[0] == "C" for ch in text)


# What a refused free-text field is told: the rule, never the digits that broke it.
_PAN_IN_TEXT = (
    "must not contain a card number (a Luhn-valid run of 12 to 19 digits, "
    "spaces or dashes between them)"
)
PAN_IN_TEXT_REASON = "CARD_NUMBER_IN_TEXT"


def free_text_violation(field_name: str, text: str) -> FieldViolation | None:
    """The rule for free text the vault stores or audits in clear (purposes, reasons,
    request ids, metadata keys): no Luhn-valid run of 12 to 19 digits, so a careless
    client cannot put a card number in the audit trail. None when the text passes."""
    if text and kinds.contains_pan_like(text):
        return FieldViolation(field_name, _PAN_IN_TEXT)
    return None


def check_free_text(field_name: str, text: str) -> None:
    """Raise INVALID_ARGUMENT (CARD_NUMBER_IN_TEXT) naming the field when the rule fails."""
    violation = free_text_violation(field_name, text)
    if violation is not None:
        raise InvalidArgumentError(violation, reason=PAN_IN_TEXT_REASON)


def recordable(text: str, max_chars: int) -> str:
    """``text`` when a refusal's audit record may carry it (bounded, no card number), else
    "": a refused purpose or reason must not reach the trail through its refusal."""
    if len(text) > max_chars or free_text_violation("", text) is not None:
        return ""
    return text


# Space separators (category Zs: " ", no-break space, ideographic space, ...): what is
# stripped around a subject id. Control characters (newlines, tabs) are not stripped but
# refused, as everywhere else in a subject id.
_SPACES = (
    " \u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u202f\u205f\u3000"
)


def normalize_subject(subject: str) -> str:
    """A subject id's normal form, what its subject_ref is computed from: Unicode NFC and
    no surrounding spaces, so "cust-1 " and "cust-1", or "é" typed as one code point or
    as "e" and a combining accent, are one subject to tokenize, export and erase."""
    if not subject.isascii():
        subject = unicodedata.normalize("NFC", subject)
    return subject.strip(_SPACES)


def uses_pan_token(kind: DataKind, fmt: TokenFormat, value: Value | None) -> bool:
    """Whether the value takes a PAN-shaped token (digits, last four kept)."""
    return kind is DataKind.PAN and fmt in _PAN_FORMATS and isinstance(value, str)


def _normalize(kind: DataKind, value: Value | None, out: list[FieldViolation]) -> Value | None:
    """The value normalised for its kind; its violations appended to ``out``."""
    if value is None:
        field_name = "address" if kind in ADDRESS_KINDS else "text"
        out.append(FieldViolation(field_name, "is required"))
        return None
    field_name = "text" if isinstance(value, str) else "address"
    try:
        return kinds.normalize(kind, value, field_name)
    except InvalidArgumentError as exc:
        out.extend(exc.violations)
    return None


class Validator:
    """The checks of every request, under the configured limits."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits

    def __repr__(self) -> str:
        return "Validator()"

    def check_item(self, item: TokenizeItem) -> Checked:
        """Validated kind, resolved format and normalised value; all violations at once.
        The item's subject is put in its normal form in place (what is sealed, hashed
        into its subject_ref and compared by an export is the normal form)."""
        violations: list[FieldViolation] = []
        if item.subject:
            item.subject = normalize_subject(item.subject)
            if not item.subject:
                violations.append(FieldViolation("subject", "must not be blank"))
        fmt = TokenFormat.UNSPECIFIED
        value: Value | None = None
        kind = _KINDS.get(item.kind)
        if kind is None or kind is DataKind.UNSPECIFIED:
            violations.append(FieldViolation("kind", "must be a known data kind"))
        else:
            if kind is DataKind.CVC:
                violations.extend(self._check_cvc(item))
            try:
                fmt = kinds.resolve_format(kind, TokenFormat(item.token_format))
            except ValueError:
                violations.append(FieldViolation("format", "must be a known token format"))
            except InvalidArgumentError as exc:
                violations.extend(exc.violations)
            value = _normalize(kind, item.value, violations)
            if value is not None and uses_pan_token(kind, fmt, value):
                try:
                    kinds.check_pan_format(str(value), fmt)
                except InvalidArgumentError as exc:
                    violations.extend(exc.violations)
        violations.extend(self.check_extras(item))
        if violations or kind is None or value is None:
            raise InvalidArgumentError(violations)
        return kind, fmt, value

    def _check_cvc(self, item: TokenizeItem) -> list[FieldViolation]:
        """A CVC is held in memory for one authorisation: no deterministic token (its
        fingerprint would index a 3-4 digit value), no idempotency record, a short TTL."""
        out = []
        if item.deterministic:
            out.append(FieldViolation("deterministic", "is not allowed for DATA_KIND_CVC"))
        if item.request_id:
            out.append(FieldViolation("request_id", "is not allowed for DATA_KIND_CVC"))
        out.extend(cvc_metadata_violations(item.metadata))
        max_ttl = self.limits.cvc_max_ttl_seconds
        if item.ttl_seconds is not None and item.ttl_seconds > max_ttl:
            out.append(
                FieldViolation("ttl", f"must be at most {max_ttl:g} seconds for DATA_KIND_CVC")
            )
        return out

    def check_extras(self, item: TokenizeItem) -> list[FieldViolation]:
        """Subject, metadata, TTL and request id of an item."""
        lim = self.limits
        out: list[FieldViolation] = []
        if len(item.subject) > lim.max_subject_chars or has_control(item.subject):
            out.append(
                FieldViolation(
                    "subject", f"must be at most {lim.max_subject_chars} printable characters"
                )
            )
        out.extend(self._check_metadata(item.metadata))
        if item.ttl_seconds is not None and not (0 < item.ttl_seconds <= lim.max_ttl_seconds):
            out.append(FieldViolation("ttl", "must be positive and at most 100 years"))
        if item.request_id and (
            len(item.request_id) > lim.max_request_id_chars
            or not _REQUEST_ID.fullmatch(item.request_id)
        ):
            out.append(
                FieldViolation(
                    "request_id",
                    f"must be at most {lim.max_request_id_chars} printable ASCII characters",
                )
            )
        elif pan := free_text_violation("request_id", item.request_id):
            out.append(pan)  # the request id is stored in clear, beside the token
        return out

    def _check_metadata(self, metadata: Mapping[str, str]) -> list[FieldViolation]:
        lim = self.limits
        out: list[FieldViolation] = []
        if len(metadata) > lim.max_metadata_entries:
            out.append(FieldViolation("metadata", f"at most {lim.max_metadata_entries} entries"))
        for key, val in metadata.items():
            if len(key) > lim.max_metadata_key_chars or not _METADATA_KEY.fullmatch(key):
                out.append(
                    FieldViolation(
                        "metadata",
                        f"keys must be 1 to {lim.max_metadata_key_chars} characters "
                        "of letters, digits, '_', '.', '-'",
                    )
                )
                break
            # Keys are labels, shown to callers that never see values: no card number.
            if pan := free_text_violation("metadata", key):
                out.append(pan)
                break
            if len(val) > lim.max_metadata_value_chars or has_control(val):
                out.append(
                    FieldViolation(
                        "metadata",
                        f"values must be at most {lim.max_metadata_value_chars} "
                        "printable characters",
                    )
                )
                break
        return out

    def check_batch_size(self, n: int, field_name: str) -> None:
        if n == 0:
            raise InvalidArgumentError(FieldViolation(field_name, "must not be empty"))
        if n > self.limits.max_batch:
            raise InvalidArgumentError(
                FieldViolation(field_name, f"at most {self.limits.max_batch} per call")
            )

    def check_purpose(self, purpose: str) -> None:
        if not purpose.strip():
            raise InvalidArgumentError(
                FieldViolation("purpose", "is required: say why the value is needed"),
                reason="PURPOSE_REQUIRED",
            )
        if len(purpose) > self.limits.max_purpose_chars or has_control(purpose):
            raise InvalidArgumentError(
                FieldViolation(
                    "purpose",
                    f"must be at most {self.limits.max_purpose_chars} printable characters",
                )
            )
        check_free_text("purpose", purpose)  # audited in clear with every reveal

    def check_reason(self, reason: str) -> None:
        """Why a subject is erased or held: required, bounded, printable, no card number
        (audited in clear, and a hold's reason is stored with the hold)."""
        limit = self.limits.max_reason_chars
        if not reason.strip():
            raise InvalidArgumentError(
                FieldViolation("reason", "is required: say why"), reason="REASON_REQUIRED"
            )
        if len(reason) > limit or has_control(reason):
            raise InvalidArgumentError(
                FieldViolation("reason", f"must be at most {limit} printable characters")
            )
        check_free_text("reason", reason)

    def check_subject(self, subject: str) -> str:
        """A data subject named by a subject request: required, bounded, printable;
        returns its normal form (normalize_subject), what its records were written with."""
        limit = self.limits.max_subject_chars
        subject = normalize_subject(subject)
        if not subject:
            raise InvalidArgumentError(FieldViolation("subject", "is required"))
        if len(subject) > limit or has_control(subject):
            raise InvalidArgumentError(
                FieldViolation("subject", f"must be at most {limit} printable characters")
            )
        return subject

    def check_correction(
        self,
        kind: DataKind,
        fmt: TokenFormat,
        token: str,
        value: Value | None,
        metadata: Mapping[str, str] | None,
    ) -> Value:
        """A correction's new value, normalised for the token's kind and shape."""
        violations: list[FieldViolation] = []
        normal = _normalize(kind, value, violations)
        if metadata is not None:
            violations.extend(self._check_metadata(metadata))
        if violations or normal is None:
            raise InvalidArgumentError(violations)
        if uses_pan_token(kind, fmt, normal):
            _check_same_shape(str(normal), fmt, token)
        return normal


def _check_same_shape(pan: str, fmt: TokenFormat, token: str) -> None:
    """The token shows the PAN's length and last four (and BIN): a new PAN must match
    them, or the token would describe another card."""
    head = 6 if fmt is TokenFormat.PAN_BIN_LAST4 else 0
    if len(pan) != len(token) or pan[-4:] != token[-4:] or pan[:head] != token[:head]:
        raise InvalidArgumentError(
            FieldViolation(
                "text",
                "must keep the length and the digits the token shows "
                "(last four, and the BIN for PAN_BIN_LAST4): tokenize a new card",
            ),
            reason="TOKEN_SHAPE_MISMATCH",
        )
