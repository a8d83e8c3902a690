"""Holders for key material that refuse to be printed, pickled or compared by value.

Named after the standard module on purpose: ``vault.secrets`` is the vault's own; code
that wants the CSPRNG imports the standard ``secrets`` module by absolute import.
"""

from __future__ import annotations

import hmac
from typing import NoReturn

__all__ = ["SecretBytes"]


class SecretBytes:
    """Key bytes that never appear in a repr, a log line, a pickle or a traceback."""

    __slots__ = ("_value",)

    def __init__(self, value: bytes) -> None:
        if not isinstance(value, bytes | bytearray):
            raise TypeError("SecretBytes needs bytes")
        self._value = bytes(value)

    def reveal(self) -> bytes:
        """The raw bytes, for the crypto primitive that needs them and nothing else."""
        return self._value

    def __len__(self) -> int:
        return len(self._value)

    def __repr__(self) -> str:
        return f"SecretBytes(<{len(self._value)} bytes redacted>)"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SecretBytes):
            return NotImplemented
        return hmac.compare_digest(self._value, other._value)

    def __hash__(self) -> int:
        raise TypeError("SecretBytes is not hashable")

    def __reduce__(self) -> NoReturn:
        raise TypeError("SecretBytes cannot be pickled")

    def __copy__(self) -> NoReturn:
        raise TypeError("SecretBytes cannot be copied")

    def __deepcopy__(self, memo: object) -> NoReturn:
        raise TypeError("SecretBytes cannot be copied")
