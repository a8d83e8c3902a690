"""The pooled CSPRNG: right sizes, uniform bounds, no repeats, fresh after fork."""

from __future__ import annotations

import os

import pytest

from vault.crypto import random as csprng


@pytest.mark.parametrize("n", [0, 1, 12, 20, 70_000])
def test_random_bytes_gives_exactly_n(n):
    assert len(csprng.random_bytes(n)) == n


def test_consecutive_draws_never_repeat():
    draws = {csprng.random_bytes(12) for _ in range(20_000)}
    assert len(draws) == 20_000


@pytest.mark.parametrize("bound", [1, 2, 10, 100, 10**11, 2**64 + 3])
def test_randbelow_stays_in_range(bound):
    values = [csprng.randbelow(bound) for _ in range(2000)]
    assert all(0 <= v < bound for v in values)


def test_randbelow_is_roughly_uniform():
    counts = [0] * 10
    for _ in range(20_000):
        counts[csprng.randbelow(10)] += 1
    # Expected 2000 each; 5 sigma is about 212.
    assert all(1700 < c < 2300 for c in counts), counts


def test_randbelow_refuses_empty_range():
    with pytest.raises(ValueError, match="positive"):
        csprng.randbelow(0)


def test_a_forked_child_does_not_reuse_the_parents_pool():
    csprng.random_bytes(1)  # the pool now holds unread bytes
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(read_fd)
        os.write(write_fd, csprng.random_bytes(32))
        os._exit(0)
    os.close(write_fd)
    child = os.read(read_fd, 32)
    os.close(read_fd)
    os.waitpid(pid, 0)
    assert child != csprng.random_bytes(32)
    assert len(child) == 32
