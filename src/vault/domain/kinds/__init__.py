"""The rules of each data kind: validation and normalisation, the canonical byte encoding
that is fingerprinted and encrypted, the masked display form, and the shape of tokens.

One module per job: ``pan`` (card numbers, Luhn, card-number-like text), ``card``
(expiry, cardholder name, CVC), ``bank`` (IBAN and account numbers), ``contact``
(e-mail, phone), ``addresses`` (postal addresses and their encoding), ``tokens`` (token
formats and shapes) and ``registry`` (which rule, mask and encoding each kind has).
Callers use ``from vault.domain import kinds`` and the names below.

Every violation description is a fixed sentence: no submitted value, no part of one.
"""

from __future__ import annotations

from vault.domain.kinds.pan import contains_pan_like, is_pan_shaped, luhn_valid
from vault.domain.kinds.registry import canonical_bytes, mask, normalize, value_from_canonical
from vault.domain.kinds.tokens import (
    check_pan_format,
    new_pan_token,
    new_random_token,
    resolve_format,
    validate_token_string,
)

__all__ = [
    "canonical_bytes",
    "check_pan_format",
    "contains_pan_like",
    "is_pan_shaped",
    "luhn_valid",
    "mask",
    "new_pan_token",
    "new_random_token",
    "normalize",
    "resolve_format",
    "validate_token_string",
    "value_from_canonical",
]
