"""What every data kind's rules share: the refusal of one field, the control-character
check and the cleaning (NFC, stripped) that every text goes through first.

Every violation description is a fixed sentence: no submitted value, no part of one.
"""

from __future__ import annotations

import unicodedata

from vault.errors import FieldViolation, InvalidArgumentError

__all__ = [
    "MALFORMED",
    "NO_EXTRA_CHARS",
    "TEXT_EXTRA_CHARS",
    "clean",
    "has_forbidden_char",
    "invalid",
]

# TEXT alone may hold line breaks and tabs; every other character of category C
# (control, format, surrogate, private use, unassigned) is refused everywhere.
TEXT_EXTRA_CHARS = frozenset("\n\t")
NO_EXTRA_CHARS: frozenset[str] = frozenset()

MALFORMED = "stored value is malformed"


def invalid(field: str, description: str) -> InvalidArgumentError:
    return InvalidArgumentError(FieldViolation(field, description))


def has_forbidden_char(text: str, allowed: frozenset[str]) -> bool:
    # isprintable() is False for every category-C character (and also for non-ASCII
    # spaces), so a True answer settles the common case without a Python-level loop.
    if text.isprintable():
        return False
    return any(ch not in allowed and unicodedata.category(ch)[0] == "C" for ch in text)


def clean(text: str) -> str:
    # NFC so that "é" typed two ways is one value (one fingerprint, one token).
    if not text.isascii():
        text = unicodedata.normalize("NFC", text)
    return text.strip()
