"""The CSPRNG, read from the OS in blocks.

Each os.urandom call is a getrandom(2) system call: about 6 us on these machines, more
than an AES-GCM encryption. Nonces and tokens take a few bytes each, so the pool reads
64 KiB at a time and hands out slices. The bytes are the OS CSPRNG's, unchanged; the
pool is dropped in a forked child so two processes never hand out the same bytes.
"""

from __future__ import annotations

import os
import threading

__all__ = ["randbelow", "random_bytes"]

_BLOCK = 64 * 1024


class _Pool:
    __slots__ = ("_buf", "_lock", "_pos")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buf = b""
        self._pos = 0

    def __repr__(self) -> str:
        return "_Pool(<redacted>)"

    def reset(self) -> None:
        self._buf = b""
        self._pos = 0

    def take(self, n: int) -> bytes:
        with self._lock:
            end = self._pos + n
            if end > len(self._buf):
                self._buf = os.urandom(max(_BLOCK, n))
                self._pos, end = 0, n
            out = self._buf[self._pos : end]
            self._pos = end
            return out


_POOL = _Pool()
os.register_at_fork(after_in_child=_POOL.reset)


def random_bytes(n: int) -> bytes:
    """``n`` bytes from the OS CSPRNG."""
    return _POOL.take(n)


def randbelow(bound: int) -> int:
    """A uniform integer in [0, bound), by rejection sampling (no modulo bias)."""
    if bound <= 0:
        raise ValueError("bound must be positive")
    bits = (bound - 1).bit_length()
    nbytes = (bits + 7) // 8 or 1
    excess = nbytes * 8 - bits
    while True:
        value = int.from_bytes(_POOL.take(nbytes), "big") >> excess
        if value < bound:
            return value
