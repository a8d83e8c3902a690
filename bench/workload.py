"""Helpers shared by the benchmark processes: test data, percentiles, /proc readings.

Imported as a sibling module by ``run.py``, ``loadgen.py``, ``inproc.py`` and
``echo_server.py`` (each runs as a script, so ``bench/`` is on ``sys.path``).
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterable, Sequence
from pathlib import Path

__all__ = [
    "PURPOSE",
    "cpu_seconds",
    "luhn_valid",
    "machine_cpu",
    "peak_rss_mib",
    "percentiles_ms",
    "random_pans",
    "read_tokens",
    "tree_pids",
]

# The purpose every benchmark reveal gives (the vault requires one and audits it).
PURPOSE = "benchmark"

_DOUBLED = bytes.maketrans(b"0123456789", b"0246813579")
_ZERO = ord("0")
_PAN_BODY = 10**14  # "4" + 14 random digits + a check digit: a 16-digit Visa-shaped PAN


def _check_digit(body: bytes) -> int:
    """Luhn check digit for ``body`` (the digits before it)."""
    doubled = body[-1::-2].translate(_DOUBLED)
    kept = body[-2::-2]
    total = sum(doubled) + sum(kept) - _ZERO * len(body)
    return (10 - total % 10) % 10


def random_pans(count: int, rng: random.Random | None = None) -> list[str]:
    """``count`` distinct random Luhn-valid 16-digit PANs (test data, not secrets)."""
    rng = rng or random.Random()
    seen: set[str] = set()
    out: list[str] = []
    while len(out) < count:
        body = b"4%014d" % rng.randrange(_PAN_BODY)
        pan = f"{body.decode()}{_check_digit(body)}"
        if pan not in seen:
            seen.add(pan)
            out.append(pan)
    return out


def luhn_valid(pan: str) -> bool:
    """Used by the self-check only."""
    digits = pan.encode()
    return _check_digit(digits[:-1]) == digits[-1] - _ZERO


def read_tokens(path: Path, sample: int, rng: random.Random | None = None) -> list[str]:
    """Up to ``sample`` tokens drawn at random from a file of one token per line."""
    rng = rng or random.Random()
    tokens = [line for line in path.read_text(encoding="ascii").splitlines() if line]
    if len(tokens) > sample:
        tokens = rng.sample(tokens, sample)
    else:
        rng.shuffle(tokens)
    return tokens


def percentiles_ms(latencies_s: Sequence[float]) -> dict[str, float | None]:
    """p50/p95/p99/max/mean in milliseconds (nearest rank); None when nothing was timed."""
    if not latencies_s:
        return {"p50": None, "p95": None, "p99": None, "max": None, "mean": None}
    ordered = sorted(latencies_s)
    n = len(ordered)

    def rank(q: float) -> float:
        return ordered[min(n - 1, max(0, int(q * n + 0.999999) - 1))] * 1000.0

    return {
        "p50": round(rank(0.50), 3),
        "p95": round(rank(0.95), 3),
        "p99": round(rank(0.99), 3),
        "max": round(ordered[-1] * 1000.0, 3),
        "mean": round(sum(ordered) / n * 1000.0, 3),
    }


# -- /proc ---------------------------------------------------------------------------

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def tree_pids(pid: int) -> list[int]:
    """``pid`` and all its live descendants (a server with worker processes)."""
    out = [pid]
    i = 0
    while i < len(out):
        p = out[i]
        i += 1
        try:
            tasks = list(Path(f"/proc/{p}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                children = (task / "children").read_text()
            except OSError:
                continue
            out.extend(int(c) for c in children.split())
    return list(dict.fromkeys(out))


def _cpu_of(pid: int) -> float:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    # Fields after the command name (which may hold spaces) start at ")".
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / _CLK_TCK


def machine_cpu() -> tuple[float, float]:
    """(busy, steal) CPU seconds of the whole machine since boot, from /proc/stat."""
    try:
        with Path("/proc/stat").open() as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return 0.0, 0.0
    # user nice system idle iowait irq softirq steal guest guest_nice
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq) / _CLK_TCK, steal / _CLK_TCK


def cpu_seconds(pids: Iterable[int]) -> float:
    """utime + stime of the processes, in seconds."""
    return sum(_cpu_of(p) for p in pids)


def peak_rss_mib(pids: Iterable[int]) -> float | None:
    """Sum of VmHWM (peak resident set) of the processes, MiB; None if none is readable."""
    total = 0
    found = False
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                total += int(line.split()[1])
                found = True
                break
    return round(total / 1024, 1) if found else None
