"""The shape of tokens: which format a kind gets, PAN-shaped tokens that keep the last
four (and the BIN) and never pass Luhn, random ``tok_`` tokens, and the check that a
string could be a token of this vault."""

from __future__ import annotations

import base64
import re
from typing import TYPE_CHECKING

from vault.crypto.random import randbelow as csprng_randbelow
from vault.crypto.random import random_bytes as csprng_bytes
from vault.domain.kinds.common import invalid
from vault.domain.kinds.pan import LAST_FOUR, luhn_valid
from vault.domain.model import DataKind, TokenFormat
from vault.errors import InternalError

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "check_pan_format",
    "new_pan_token",
    "new_random_token",
    "resolve_format",
    "validate_token_string",
]

# PAN_BIN_LAST4 keeps the first six digits: the 6-digit BIN every scheme still routes on.
# Keeping eight (the newer 8-digit BINs) would leave a 12-digit PAN only 0 free digits.
_BIN_DIGITS = 6
# Fewer free digits than this makes a token space too small to be worth the name.
_MIN_FREE_DIGITS = 2
_RANDOM_TOKEN_BYTES = 20  # 160 bits from the CSPRNG: 32 base32 characters, no padding
_RANDOM_TOKEN_PREFIX = "tok_"

_TOKEN = re.compile(r"tok_[a-z2-7]{32}|[0-9]{12,19}")
_PAN_FORMATS = frozenset({TokenFormat.PAN_LAST4, TokenFormat.PAN_BIN_LAST4})


def resolve_format(kind: DataKind, fmt: TokenFormat) -> TokenFormat:
    """The token format to use: the kind's default for UNSPECIFIED, else ``fmt`` if allowed."""
    try:
        resolved = TokenFormat(fmt)
    except ValueError:
        raise invalid("format", "is not a known token format") from None
    if resolved == TokenFormat.UNSPECIFIED:
        return TokenFormat.PAN_LAST4 if kind == DataKind.PAN else TokenFormat.RANDOM
    if resolved in _PAN_FORMATS and kind != DataKind.PAN:
        raise invalid("format", "PAN formats apply only to DATA_KIND_PAN")
    return resolved


def check_pan_format(pan: str, fmt: TokenFormat) -> None:
    """Refuse a PAN format that leaves too few digits to draw (a 12-digit PAN with BIN
    and last four kept has two)."""
    kept_head = _BIN_DIGITS if fmt == TokenFormat.PAN_BIN_LAST4 else 0
    if len(pan) - kept_head - LAST_FOUR < _MIN_FREE_DIGITS:
        raise invalid("format", "too few digits to tokenize in this format")


def new_pan_token(
    pan: str, fmt: TokenFormat, randbelow: Callable[[int], int] = csprng_randbelow
) -> str:
    """A PAN-shaped token for a NORMALISED (Luhn-valid) ``pan``.

    Same length, digits only, last four kept, and with PAN_BIN_LAST4 the first six too.
    The token always fails Luhn, so it is never a card number and never equals ``pan``.
    Whether it is already in use is for the caller to check (and call again).
    """
    if fmt == TokenFormat.PAN_LAST4:
        kept_head = 0
    elif fmt == TokenFormat.PAN_BIN_LAST4:
        kept_head = _BIN_DIGITS
    else:
        raise InternalError("not a PAN token format")
    if not luhn_valid(pan):
        raise InternalError("PAN is not normalised")
    check_pan_format(pan, fmt)
    free = len(pan) - kept_head - LAST_FOUR
    # One draw below 10**free is the same uniform choice as `free` draws below 10, at one
    # CSPRNG call instead of `free` of them.
    bound = 10**free
    drawn = randbelow(bound)
    if not 0 <= drawn < bound:
        raise InternalError("random source returned a number out of range")
    middle = str(drawn).zfill(free)
    token = pan[:kept_head] + middle + pan[-LAST_FOUR:]
    if luhn_valid(token):
        # Changing one digit always changes the Luhn sum mod 10 (the doubling map is a
        # permutation of 0-9), so bumping the last free digit makes it fail in one pass,
        # with no rejection loop. It skews that digit slightly: fine, it is not a key.
        bumped = str((int(middle[-1]) + 1) % 10)
        token = pan[:kept_head] + middle[:-1] + bumped + pan[-LAST_FOUR:]
    return token


def new_random_token(token_bytes: Callable[[int], bytes] = csprng_bytes) -> str:
    """``tok_`` and 32 lower-case base32 characters: 160 CSPRNG bits, nothing else."""
    raw = token_bytes(_RANDOM_TOKEN_BYTES)
    if len(raw) != _RANDOM_TOKEN_BYTES:
        raise InternalError("random source returned the wrong number of bytes")
    return _RANDOM_TOKEN_PREFIX + base64.b32encode(raw).decode("ascii").lower()


def validate_token_string(token: str, field: str) -> None:
    """Refuse anything a caller sends as a token that this vault could not have issued."""
    if _TOKEN.fullmatch(token) is None:
        raise invalid(field, "is not a token of this vault")
