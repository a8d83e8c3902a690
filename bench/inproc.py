"""The vault's use cases called in-process, with no RPC: the limit, and the preloader.

``inproc.py run``: many coroutines call ``Tokenize.tokenize`` / ``Reveal.detokenize`` with
batches of 100 on a data dir, exactly as the gRPC servicer would (same store, keys,
limits; a Caller with every scope in the dev tenant). Prints one JSON line shaped like
``loadgen.py``'s, with this process's own CPU time and peak RSS as the "server" figures.

``inproc.py preload``: adds tokens to a data dir through the same use cases, in
batches of 1000 from a few coroutines (group commit coalesces them), and appends every
new token to a file so the reveal scenarios can pick stored tokens at random.

The vault is built the way ``vault.server.VaultServer.start`` builds it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from workload import PURPOSE, machine_cpu, percentiles_ms, random_pans, read_tokens

from vault.audit.trail import AuditTrail
from vault.auth.policy import ALL_SCOPES, Caller
from vault.clock import SystemClock
from vault.config import Config
from vault.crypto.keyfile import KeyFileKek
from vault.domain.keys import KeyMaterial
from vault.domain.model import DataKind
from vault.domain.usecases import UseCases, build_use_cases
from vault.domain.validation import Limits, TokenizeItem
from vault.wiring import DEV_TENANT, init_data_dir, open_store

CALLER = Caller("bench", DEV_TENANT, frozenset(ALL_SCOPES))
BATCH = 100  # items per call unless --batch says otherwise
POOL_RATE = 100_000  # items/s the tokenize pool is sized for; past it values repeat


@asynccontextmanager
async def open_vault(data_dir: Path) -> AsyncIterator[UseCases]:
    """SqliteStore + master key + KeyMaterial + AuditTrail + the use cases, as the server
    wires them."""
    cfg = Config(data_dir=data_dir)
    clock = SystemClock()
    store = open_store(cfg)
    await store.open()
    try:
        await init_data_dir(cfg, store, clock)
        kek = KeyFileKek.load(cfg.master_key_path)
        keys = KeyMaterial(store, kek, clock)
        await keys.load()
        # The audit trail as the server has it: every reveal writes its records.
        audit = await AuditTrail.open(store, kek, clock, None)
        yield build_use_cases(store, keys, clock, Limits(max_batch=cfg.max_batch), audit=audit)
    finally:
        await store.close()


def _items(pans: Sequence[str]) -> list[TokenizeItem]:
    return [TokenizeItem(kind=int(DataKind.PAN), value=p) for p in pans]


# -- preload ----------------------------------------------------------------------------


async def preload(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    remaining = args.count
    added = 0
    # Appended from the event loop: small writes to a local file, not measured.
    out = Path(args.tokens_out).open("a", encoding="ascii")  # noqa: SIM115, ASYNC230
    t0 = time.perf_counter()

    async def loader(vault: UseCases) -> None:
        nonlocal remaining, added
        while remaining > 0:
            n = min(args.batch, remaining)
            remaining -= n
            done = await vault.tokenize.tokenize(CALLER, _items(random_pans(n, rng)), batch=True)
            out.write("".join(t.token + "\n" for t in done))
            added += n

    try:
        async with open_vault(Path(args.data_dir)) as vault:
            await asyncio.gather(*(loader(vault) for _ in range(args.concurrency)))
    finally:
        out.close()
    seconds = time.perf_counter() - t0
    return {"added": added, "seconds": round(seconds, 2), "rate": round(added / seconds, 1)}


# -- measured run -----------------------------------------------------------------------


def _own_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _own_peak_rss_mib() -> float:
    # ru_maxrss is KiB on Linux: the same VmHWM the server figures use.
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    tokenizing = args.scenario == "inproc_tokenize"
    size = args.batch
    # batch=False is the unary path (Tokenize/Detokenize), batch=True BatchTokenize's.
    batch = size != 1
    if tokenizing:
        count = max(50, int(POOL_RATE * (args.warmup + args.duration)) // size)
        pans = random_pans(count * size, rng)
        tok_pool = [_items(pans[i : i + size]) for i in range(0, len(pans), size)]
        pool_len = len(tok_pool)
    else:
        tokens = read_tokens(Path(args.tokens_file), args.token_sample, rng)
        det_pool = [rng.sample(tokens, size) for _ in range(max(200, len(tokens) // size))]
        pool_len = len(det_pool)

    latencies: list[float] = []
    flags = {"measuring": False, "stop": False, "wrapped": False}
    ops = 0

    async with open_vault(Path(args.data_dir)) as vault:
        # One checked call, not timed.
        if tokenizing:
            probe = await vault.tokenize.tokenize(
                CALLER, _items(random_pans(size, rng)), batch=batch
            )
            assert len(probe) == size
        else:
            revealed = await vault.reveal.detokenize(CALLER, det_pool[0], PURPOSE, batch=batch)
            assert len(revealed) == size

        async def worker(start: int) -> None:
            nonlocal ops
            i = start
            perf = time.perf_counter
            while not flags["stop"]:
                if i >= pool_len:
                    # Only tokenize needs fresh values; reveals may repeat tokens.
                    flags["wrapped"] = flags["wrapped"] or tokenizing
                    i %= pool_len
                t0 = perf()
                if tokenizing:
                    await vault.tokenize.tokenize(CALLER, tok_pool[i], batch=batch)
                else:
                    await vault.reveal.detokenize(CALLER, det_pool[i], PURPOSE, batch=batch)
                if flags["measuring"]:
                    latencies.append(perf() - t0)
                    ops += 1
                i += args.concurrency

        tasks = [asyncio.create_task(worker(w)) for w in range(args.concurrency)]
        await asyncio.sleep(args.warmup)
        flags["measuring"] = True
        t_start, cpu_start, machine_start = time.perf_counter(), _own_cpu(), machine_cpu()
        await asyncio.sleep(args.duration)
        flags["measuring"] = False
        t_end, cpu_end, machine_end = time.perf_counter(), _own_cpu(), machine_cpu()
        flags["stop"] = True
        await asyncio.gather(*tasks)

    window = t_end - t_start
    return {
        "scenario": args.scenario,
        "concurrency": args.concurrency,
        "duration_s": round(window, 4),
        "warmup_s": args.warmup,
        "ops": ops,
        "batch": size,
        "items": ops * size,
        "ops_per_s": round(ops / window, 1),
        "items_per_s": round(ops * size / window, 1),
        "latency_ms": percentiles_ms(latencies),
        "errors": 0,
        "first_error": None,
        "server_cpu_s": round(cpu_end - cpu_start, 3),
        "client_cpu_s": None,
        "machine_busy_cores": round((machine_end[0] - machine_start[0]) / window, 3),
        "machine_steal_cores": round((machine_end[1] - machine_start[1]) / window, 3),
        "peak_rss_mib": _own_peak_rss_mib(),
        "pool_wrapped": flags["wrapped"],
        "server_pid": os.getpid(),
        "event_loop": type(asyncio.get_running_loop()).__module__.split(".")[0],
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    pre = sub.add_parser("preload", help="add tokens to a data dir")
    pre.add_argument("--data-dir", required=True)
    pre.add_argument("--count", type=int, required=True, help="tokens to add")
    pre.add_argument("--tokens-out", required=True, help="file the new tokens are appended to")
    pre.add_argument("--batch", type=int, default=1000)
    pre.add_argument("--concurrency", type=int, default=4)
    pre.add_argument("--seed", type=int, default=None)
    run = sub.add_parser("run", help="measure the use cases in-process")
    run.add_argument("--data-dir", required=True)
    run.add_argument("--scenario", required=True, choices=["inproc_tokenize", "inproc_detokenize"])
    run.add_argument("--concurrency", type=int, default=16)
    run.add_argument("--duration", type=float, default=5.0)
    run.add_argument("--warmup", type=float, default=1.5)
    run.add_argument("--tokens-file", help="stored tokens (inproc_detokenize)")
    run.add_argument("--token-sample", type=int, default=20_000)
    run.add_argument("--batch", type=int, default=BATCH, help="items per call (1: unary path)")
    run.add_argument("--seed", type=int, default=None)
    args = p.parse_args()
    if args.command == "run" and args.scenario == "inproc_detokenize" and not args.tokens_file:
        p.error("inproc_detokenize needs --tokens-file")
    coro = preload(args) if args.command == "preload" else measure(args)
    try:
        import uvloop  # noqa: PLC0415 - optional, as in vaultctl
    except ImportError:
        result = asyncio.run(coro)
    else:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            result = runner.run(coro)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
