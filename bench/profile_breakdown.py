"""Where a unary call's server CPU goes, in µs per call: echo, Tokenize, Detokenize.

For each scenario: a fresh server (the echo baseline, or the vault on a copy of a data
dir preloaded with 10k tokens), ``loadgen.py`` at ``--concurrency`` calls in flight, and
``py-spy record`` sampling the server in blocking mode (``--threads``, no
``--nonblocking``: non-blocking sampling truncates the loop thread's stacks, see
shared/PERFORMANCE-NOTES.md) while the load generator measures. Each sample is put in
one bucket by its innermost frame that belongs to one (the table below), and the
server's CPU per call (utime+stime from /proc over the load generator's window) is
split by the buckets' shares of the samples. py-spy sees Python threads only: grpc's
C poller threads land in the total but not in the samples, so their share is spread
over the buckets (echo's "grpc machinery" is the floor of that).

Blocking samples of a thread waiting in a system call that py-spy takes for running
(the writer thread in fsync, in uninterruptible disk sleep) are not CPU: so the CPU of
each thread is also read from ``/proc/PID/task/TID/stat`` (utime+stime) over the
sampled window, each thread named from ``py-spy dump`` (the loop is the main thread;
aiosqlite's threads, in the order they were started: the writer, then the reader; the
threads py-spy does not list are grpc's C threads), and the table says how much of
its "group-commit path" ran on the writer thread against what that thread really
used. The per-thread table is the one to read.

    python bench/profile_breakdown.py --seconds 6 --concurrency 16

Writes bench/results/profile.json and bench/results/profile.md (``--out`` to change).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import run
from profile_server import PY_SPY
from run import BENCH, PROCS, PYTHON, RESULTS, Context, Mode, preload, start_server, vault_cmd

SCENARIOS = ("echo_unary", "tokenize_unary", "detokenize_unary")
TICK = os.sysconf("SC_CLK_TCK")
THREADS = (
    "event-loop thread",
    "aiosqlite writer thread",
    "aiosqlite reader thread",
    "other Python threads",
    "grpc C threads (not seen by py-spy)",
)
WRITER = "_connection_worker_thread"

# (bucket, substrings of "function (path)"): the first bucket any frame matches, from
# the innermost frame out, takes the sample; none matching is grpc machinery.
BUCKETS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("prometheus-client calls", ("prometheus_client/",)),
    ("audit append", ("vault/audit/", "audit_chain.py", "_apply_audits", "append_audit")),
    (
        "group-commit path (queue, futures, writer thread, SQLite)",
        ("vault/storage/", "aiosqlite/", "sqlite3/", "asyncpg/"),
    ),
    (
        "validation and crypto",
        (
            "vault/crypto/",
            "cryptography/",
            "hmac.py",
            "vault/domain/validation.py",
            "vault/domain/kinds/",
            "vault/domain/codec.py",
            "vault/domain/cvc.py",
        ),
    ),
    (
        "protobuf building and decoding",
        ("protobuf/", "token_service.py", "_pb2.py", "decode (rpc.py"),
    ),
    ("rpc wrapper (auth, request context, metrics)", ("vault/api/rpc.py", "vault/auth/", "uuid")),
    ("use cases (the rest of the domain)", ("vault/domain/",)),
)
GRPC = "grpc machinery, event loop and the rest"
ON_WORKERS = "on aiosqlite threads"


def bucket(frames: list[str]) -> str:
    for frame in reversed(frames):
        for name, needles in BUCKETS:
            if any(n in frame for n in needles):
                return name
    return GRPC


def thread_ticks(pid: int) -> dict[int, int]:
    """utime+stime (clock ticks) of every thread of the process, by thread id."""
    ticks: dict[int, int] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue  # the thread ended
        fields = stat[stat.rindex(")") + 2 :].split()
        ticks[int(task.name)] = int(fields[11]) + int(fields[12])
    return ticks


def thread_roles(pid: int) -> dict[int, str]:
    """The role of each Python thread, by thread id, from ``py-spy dump``."""
    assert PY_SPY is not None
    out = subprocess.run(
        [PY_SPY, "dump", "--pid", str(pid)], check=True, capture_output=True, text=True
    ).stdout
    roles: dict[int, str] = {}
    workers: list[int] = []
    for block in re.split(r"\n(?=Thread )", out):
        m = re.match(r"Thread (\d+) ", block)
        if not m:
            continue
        tid = int(m[1])
        if tid == pid:
            roles[tid] = THREADS[0]
        elif WRITER in block:
            workers.append(tid)
        else:
            roles[tid] = THREADS[3]
    # aiosqlite names no thread: the writer's connection is opened first (SqliteStore.open).
    for i, tid in enumerate(sorted(workers)):
        roles[tid] = THREADS[1] if i == 0 else THREADS[2] if i == 1 else THREADS[3]
    return roles


def per_thread(before: dict[int, int], after: dict[int, int], roles: dict[int, str]) -> dict:
    """CPU share of each thread role over the window (fractions of the process's CPU)."""
    spent: collections.Counter[str] = collections.Counter()
    for tid, t in after.items():
        spent[roles.get(tid, THREADS[4])] += t - before.get(tid, 0)
    total = sum(spent.values()) or 1
    return {name: spent.get(name, 0) / total for name in THREADS} | {
        "_cores": {name: spent.get(name, 0) / TICK for name in THREADS}
    }


def shares(raw: Path) -> tuple[int, dict[str, int]]:
    """Samples in all and per bucket, from py-spy's raw (collapsed) output; the samples
    taken on aiosqlite's threads are also counted under "on aiosqlite threads"."""
    counts: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        frames = [f for f in stack.split(";") if f and not f.startswith(("thread (", "process "))]
        if not frames:
            continue
        n = int(count_text)
        total += n
        counts[bucket(frames)] += n
        if any(WRITER in f for f in frames):
            counts[ON_WORKERS] += n
    return total, dict(counts)


def profile_one(ctx: Context, scenario: str, concurrency: int, seconds: float) -> dict:
    tmp = ctx.tmp
    key = ""
    if scenario.startswith("echo_"):
        cmd = [PYTHON, str(BENCH / "echo_server.py"), "--listen", "127.0.0.1:0"]
        server = start_server(cmd, tmp / f"{scenario}.log")
    else:
        shutil.copytree(ctx.template, tmp / scenario)
        d = tmp / scenario
        server = start_server(vault_cmd(d), tmp / f"{scenario}.log", d)
        key = (d / "dev-api-key").read_text().strip()
    try:
        lead = 3.0  # the client's set-up and warm-up, before measuring
        cmd = [PYTHON, str(BENCH / "loadgen.py"), "--target", server.target]
        cmd += ["--scenario", scenario, "--concurrency", str(concurrency)]
        cmd += ["--warmup", str(lead), "--key", key, "--tokens-file", str(ctx.template_tokens)]
        cmd += ["--server-pid", str(server.proc.pid)]
        # First without py-spy (blocking samples pause the process and slow it several
        # times over): the CPU of each thread, from /proc, and the calls it served.
        clean_out = tmp / f"{scenario}-clean.json"
        with clean_out.open("wb") as stdout, (tmp / "loadgen.log").open("ab") as log:
            client = PROCS.start([*cmd, "--duration", str(seconds)], stdout=stdout, stderr=log)
            time.sleep(lead - 0.5)
            roles = thread_roles(server.proc.pid)
            time.sleep(0.8)
            before, t0 = thread_ticks(server.proc.pid), time.monotonic()
            client.wait(timeout=120)
            threads = per_thread(before, thread_ticks(server.proc.pid), roles)
            wall = time.monotonic() - t0
        clean = json.loads(clean_out.read_text().strip().splitlines()[-1])
        # Then the py-spy samples, for the buckets (their shares, not their speed).
        out = tmp / f"{scenario}.json"
        raw = tmp / f"{scenario}.txt"
        with out.open("wb") as stdout, (tmp / "loadgen.log").open("ab") as log:
            client = PROCS.start([*cmd, "--duration", str(seconds + 1)], stdout=stdout, stderr=log)
            time.sleep(lead + 0.8)
            assert PY_SPY is not None
            spy = [PY_SPY, "record", "--pid", str(server.proc.pid), "--duration", str(int(seconds))]
            spy += ["--format", "raw", "--output", str(raw), "--rate", "250", "--threads"]
            subprocess.run(spy, check=True, capture_output=True)
            client.wait(timeout=120)
        result = json.loads(out.read_text().strip().splitlines()[-1])
    finally:
        PROCS.stop_all()
    total, counts = shares(raw)
    us_per_call = result["server_cpu_s"] / result["ops"] * 1e6
    names = [name for name, _ in BUCKETS] + [GRPC, ON_WORKERS]
    cores = threads.pop("_cores")
    clean_us = clean["server_cpu_s"] / clean["ops"] * 1e6
    return {
        "scenario": scenario,
        "concurrency": concurrency,
        "ops_per_s": result["ops_per_s"],
        "server_cpu_us_per_call": round(us_per_call, 1),
        "clean_ops_per_s": clean["ops_per_s"],
        "clean_latency_ms": clean["latency_ms"],
        "clean_server_cpu_us_per_call": round(clean_us, 1),
        "samples": total,
        "us_per_call": {n: round(us_per_call * counts.get(n, 0) / total, 1) for n in names},
        "thread_us_per_call": {n: round(clean_us * threads[n], 1) for n in THREADS},
        "thread_cores": {n: round(cores[n] / wall, 3) for n in THREADS},
    }


def thread_markdown(rows: list[dict]) -> str:
    head = "| µs of server CPU per call, from /proc | " + " | ".join(r["scenario"] for r in rows)
    lines = [head + " |", "|---|" + "---:|" * len(rows)]
    lines.extend(
        f"| {n} | "
        + " | ".join(
            f"{r['thread_us_per_call'][n]:.0f} ({r['thread_cores'][n]:.2f} cores)" for r in rows
        )
        + " |"
        for n in THREADS
    )
    lines.append(
        "| **total (from /proc)** | "
        + " | ".join(f"**{r['clean_server_cpu_us_per_call']:.0f}**" for r in rows)
        + " |"
    )
    lines.append(
        "| calls/s (no py-spy) | " + " | ".join(f"{r['clean_ops_per_s']:,.0f}" for r in rows) + " |"
    )
    lines.append(
        "| py-spy samples on aiosqlite threads, as µs (sampled run) | "
        + " | ".join(f"{r['us_per_call'][ON_WORKERS]:.0f}" for r in rows)
        + " |"
    )
    return "\n".join(lines) + "\n"


def markdown(rows: list[dict]) -> str:
    names = [n for n in rows[0]["us_per_call"] if n != ON_WORKERS]
    head = "| µs of server CPU per call | " + " | ".join(r["scenario"] for r in rows) + " |"
    lines = [head, "|---|" + "---:|" * len(rows)]
    lines.extend(
        f"| {n} | " + " | ".join(f"{r['us_per_call'][n]:.0f}" for r in rows) + " |" for n in names
    )
    lines.append(
        "| **total (from /proc)** | "
        + " | ".join(f"**{r['server_cpu_us_per_call']:.0f}**" for r in rows)
        + " |"
    )
    lines.append(
        "| calls/s while sampled | " + " | ".join(f"{r['ops_per_s']:,.0f}" for r in rows) + " |"
    )
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--seconds", type=float, default=6.0)
    p.add_argument("--out", type=Path, default=RESULTS / "profile")
    args = p.parse_args()
    if PY_SPY is None:
        print("py-spy is not installed: pip install py-spy", file=sys.stderr)
        return 1
    tmp = Path(tempfile.mkdtemp(prefix="vault-breakdown-"))
    ctx = Context(Mode("profile", args.seconds, 1.0, (), ()), tmp, keep=False)
    try:
        preload(ctx, ctx.template, run.BASE_TOKENS, ctx.template_tokens)
        rows = [profile_one(ctx, s, args.concurrency, args.seconds) for s in SCENARIOS]
    finally:
        PROCS.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=2) + "\n")
    table = markdown(rows) + "\n" + thread_markdown(rows)
    args.out.with_suffix(".md").write_text(
        f"# Server CPU per unary call, c={args.concurrency}"
        f" (py-spy, blocking, {args.seconds:g} s; per thread from /proc)\n\n" + table
    )
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
