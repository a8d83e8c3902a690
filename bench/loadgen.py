"""Load generator: a grpc.aio client, as a checkout service would call the vault.

Runs in its own process. Requests are built and serialised before the clock starts
(the measured loop hands pre-serialised bytes to the channel and does not parse the
answers), so the client spends its CPU on the RPC itself. ``concurrency`` coroutines
share a few channels, each with its own connection (so ``--workers`` servers behind
SO_REUSEPORT see several connections).

Timeline: set-up (build requests, connect, one checked call per method), warm-up
(load, nothing recorded), measured window (every call completing inside it is counted
and its latency kept), stop. When ``--server-pid`` is given, the server's CPU time
(utime+stime of it and its children) is read at the two edges of the window.

Prints exactly one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import random
import resource
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from workload import (
    PURPOSE,
    cpu_seconds,
    luhn_valid,
    machine_cpu,
    percentiles_ms,
    random_pans,
    read_tokens,
    tree_pids,
)

from vault.v1 import token_service_pb2 as pb

VAULT = "/vault.v1.TokenService/"
ECHO = "/bench.v1.EchoService/"
PAN = 1  # DATA_KIND_PAN
BATCH = 100  # items per batch call

# Pre-built request pools are sized for this rate over warm-up + window; past it the
# pool wraps and values repeat (reported as pool_wrapped; the vault still makes a new
# token for each call, values are not deterministic).
UNARY_POOL_RATE = 6_000  # calls/s
BATCH_POOL_RATE = 60_000  # items/s
ECHO_UNARY_POOL = 20_000  # the echo stores nothing: distinct values do not matter
ECHO_BATCH_POOL = 200
STREAM_POOL_RATE = 30_000  # items/s over TokenizeStream
MAX_ERRORS = 200  # stop early: the server is failing, not being measured

SCENARIOS = (
    "tokenize_unary",
    "detokenize_unary",
    "tokenize_batch",
    "detokenize_batch",
    "mixed",
    "tokenize_stream",
    "echo_unary",
    "echo_batch",
)
DETOKENIZING = {"detokenize_unary", "detokenize_batch", "mixed"}
MIXED_TOKENIZE_SHARE = 0.8

Call = Callable[..., Awaitable[bytes]]
# A TokenizeStreamResponse whose first field is 2 (`error`, length-delimited) is a
# per-item error; 1 (`response`) is a token. Read from the first byte, nothing parsed.
STREAM_ERROR_TAG = 0x12


@dataclass
class State:
    echo: bool = False
    measuring: bool = False
    stop: bool = False
    ops: int = 0
    ops_by_method: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str | None = None
    wrapped: bool = False


def _tokenize_req(pan: str) -> bytes:
    return pb.TokenizeRequest(kind=PAN, text=pan).SerializeToString()  # type: ignore[arg-type]


def _batch_tokenize_req(pans: list[str]) -> bytes:
    return pb.BatchTokenizeRequest(
        requests=[pb.TokenizeRequest(kind=PAN, text=p) for p in pans]  # type: ignore[arg-type]
    ).SerializeToString()


def _detokenize_req(token: str) -> bytes:
    return pb.DetokenizeRequest(token=token, purpose=PURPOSE).SerializeToString()


def _batch_detokenize_req(tokens: list[str]) -> bytes:
    return pb.BatchDetokenizeRequest(tokens=tokens, purpose=PURPOSE).SerializeToString()


def _pool_size(rate: int, seconds: float, floor: int) -> int:
    return max(floor, int(rate * seconds))


def _tokenize_pool(scenario: str, seconds: float, rng: random.Random) -> list[bytes]:
    if scenario == "echo_unary":
        count = ECHO_UNARY_POOL
    else:
        share = MIXED_TOKENIZE_SHARE if scenario == "mixed" else 1.0
        count = _pool_size(int(UNARY_POOL_RATE * share), seconds, 1000)
    return [_tokenize_req(p) for p in random_pans(count, rng)]


def _batch_tokenize_pool(scenario: str, seconds: float, rng: random.Random) -> list[bytes]:
    calls = (
        ECHO_BATCH_POOL
        if scenario == "echo_batch"
        else _pool_size(BATCH_POOL_RATE // BATCH, seconds, 50)
    )
    pans = random_pans(calls * BATCH, rng)
    return [_batch_tokenize_req(pans[i : i + BATCH]) for i in range(0, len(pans), BATCH)]


async def _setup_tokens(call: Call, md: tuple[tuple[str, str], ...], count: int) -> list[str]:
    """Tokens for a reveal scenario when no file of stored tokens is given."""
    tokens: list[str] = []
    pans = random_pans(count)
    for i in range(0, count, 1000):
        raw = await call(_batch_tokenize_req(pans[i : i + 1000]), metadata=md, timeout=60)
        tokens.extend(r.token for r in pb.BatchTokenizeResponse.FromString(raw).responses)
    return tokens


def _check(scenario: str, method: str, raw: bytes) -> None:
    """One call per method is parsed and checked before the clock starts."""
    if method == "Tokenize":
        resp = pb.TokenizeResponse.FromString(raw)
        ok = bool(resp.token)
    elif method == "BatchTokenize":
        bresp = pb.BatchTokenizeResponse.FromString(raw)
        ok = len(bresp.responses) == BATCH and all(r.token for r in bresp.responses)
    elif method == "Detokenize":
        dresp = pb.DetokenizeResponse.FromString(raw)
        ok = luhn_valid(dresp.text)
    else:
        bd = pb.BatchDetokenizeResponse.FromString(raw)
        ok = len(bd.responses) == BATCH and all(luhn_valid(r.text) for r in bd.responses)
    if not ok:
        raise SystemExit(f"loadgen: {scenario}: {method} answered something unexpected")


async def _worker(
    state: State,
    plan: list[tuple[str, Call, list[bytes]]],
    weights: list[float] | None,
    md: tuple[tuple[str, str], ...],
    start: int,
    step: int,
    rng: random.Random,
) -> None:
    """Calls back to back until told to stop; request i, i+step, i+2*step... of a pool."""
    index = [start] * len(plan)
    perf = time.perf_counter
    latencies = state.latencies
    by_method = state.ops_by_method
    single = plan[0] if len(plan) == 1 else None
    fresh = set() if state.echo else {"Tokenize", "BatchTokenize"}
    while not state.stop:
        if single is not None:
            k, (name, call, pool) = 0, single
        else:
            assert weights is not None
            k = 0 if rng.random() < weights[0] else 1
            name, call, pool = plan[k]
        i = index[k]
        index[k] = i + step
        if i >= len(pool):
            # Only the vault's tokenize needs fresh values; reveals and echoes may repeat.
            state.wrapped = state.wrapped or name in fresh
            i %= len(pool)
        t0 = perf()
        try:
            await call(pool[i], metadata=md)
        except grpc.aio.AioRpcError as exc:
            state.errors += 1
            if state.first_error is None:
                state.first_error = f"{name}: {exc.code().name}: {exc.details()}"
            if state.errors >= MAX_ERRORS:
                state.stop = True
            continue
        if state.measuring:
            latencies.append(perf() - t0)
            state.ops += 1
            by_method[name] = by_method.get(name, 0) + 1


async def _stream_worker(
    state: State,
    open_stream: Callable[..., Any],
    pool: list[bytes],
    md: tuple[tuple[str, str], ...],
    window: int,
    start: int,
    step: int,
) -> None:
    """One TokenizeStream with ``window`` items in flight: a writer sends while the
    window has room, this coroutine reads the answers (in order) and times each item
    from its send."""
    call = open_stream(metadata=md)
    sent: collections.deque[float] = collections.deque()
    room = asyncio.Semaphore(window)
    perf = time.perf_counter

    async def write() -> None:
        i = start
        while not state.stop:
            await room.acquire()
            if state.stop:
                break
            if i >= len(pool):
                state.wrapped = True
            sent.append(perf())
            await call.write(pool[i % len(pool)])
            i += step
        await call.done_writing()

    writer = asyncio.ensure_future(write())
    try:
        async for raw in call:
            t0 = sent.popleft()
            room.release()
            if raw[0] == STREAM_ERROR_TAG:
                state.errors += 1
                if state.first_error is None:
                    status = pb.TokenizeStreamResponse.FromString(raw).error
                    state.first_error = f"TokenizeStream item: {status.code}: {status.message}"
                if state.errors >= MAX_ERRORS:
                    state.stop = True
                continue
            if state.measuring:
                state.latencies.append(perf() - t0)
                state.ops += 1
    except grpc.aio.AioRpcError as exc:
        state.errors += 1
        state.first_error = state.first_error or f"TokenizeStream: {exc.code().name}"
    finally:
        room.release()  # a writer waiting for room sees the stop
        await writer


def _client_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _stream_tasks(
    state: State,
    args: argparse.Namespace,
    channels: list[grpc.aio.Channel],
    md: tuple[tuple[str, str], ...],
    rng: random.Random,
) -> list[asyncio.Task[None]]:
    """tokenize_stream: one stream per channel, ``concurrency`` items in flight in all."""
    pool_size = _pool_size(STREAM_POOL_RATE, args.warmup + args.duration, 1000)
    pool = [_tokenize_req(p) for p in random_pans(pool_size, rng)]
    n = len(channels)
    windows = [args.concurrency // n + (1 if i < args.concurrency % n else 0) for i in range(n)]
    return [
        asyncio.create_task(
            _stream_worker(state, ch.stream_stream(VAULT + "TokenizeStream"), pool, md, w, i, n)
        )
        for i, (ch, w) in enumerate(zip(channels, windows, strict=True))
        if w
    ]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    seconds = args.warmup + args.duration
    md = (("authorization", f"Bearer {args.key}"),)
    n_channels = max(1, min(args.concurrency, args.channels))
    channels = [
        grpc.aio.insecure_channel(
            args.target,
            options=[
                # A connection per channel, not one shared subchannel for all of them.
                ("grpc.use_local_subchannel_pool", 1),
                ("bench.channel", i),
                ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            ],
        )
        for i in range(n_channels)
    ]
    try:
        for ch in channels:
            await asyncio.wait_for(ch.channel_ready(), timeout=30)
        prefix = ECHO if args.scenario.startswith("echo_") else VAULT

        def calls(method: str) -> list[Call]:
            return [ch.unary_unary(prefix + method) for ch in channels]

        scenario = args.scenario
        tokens: list[str] = []
        if scenario in DETOKENIZING:
            if args.tokens_file:
                tokens = read_tokens(Path(args.tokens_file), args.token_sample, rng)
            else:
                tokens = await _setup_tokens(calls("BatchTokenize")[0], md, args.token_sample)
            if len(tokens) < BATCH:
                raise SystemExit("loadgen: fewer than 100 tokens to reveal")

        # Each plan entry: (method, one callable per channel, pre-serialised requests).
        plan: list[tuple[str, list[Call], list[bytes]]] = []
        if scenario in {"tokenize_unary", "echo_unary", "mixed"}:
            plan.append(("Tokenize", calls("Tokenize"), _tokenize_pool(scenario, seconds, rng)))
        if scenario in {"tokenize_batch", "echo_batch"}:
            plan.append(
                (
                    "BatchTokenize",
                    calls("BatchTokenize"),
                    _batch_tokenize_pool(scenario, seconds, rng),
                )
            )
        if scenario in {"detokenize_unary", "mixed"}:
            plan.append(("Detokenize", calls("Detokenize"), [_detokenize_req(t) for t in tokens]))
        if scenario == "detokenize_batch":
            batches = [
                _batch_detokenize_req(rng.sample(tokens, BATCH))
                for _ in range(max(200, len(tokens) // BATCH))
            ]
            plan.append(("BatchDetokenize", calls("BatchDetokenize"), batches))

        # One checked call per method (not timed); the pool's requests stay unused by it.
        for method, method_calls, pool in plan:
            probe = (
                _tokenize_req(random_pans(1, rng)[0])
                if method == "Tokenize"
                else _batch_tokenize_req(random_pans(BATCH, rng))
                if method == "BatchTokenize"
                else pool[0]
            )
            _check(scenario, method, await method_calls[0](probe, metadata=md, timeout=30))

        weights = [MIXED_TOKENIZE_SHARE, 1 - MIXED_TOKENIZE_SHARE] if len(plan) > 1 else None
        state = State(echo=scenario.startswith("echo_"))
        server_pids = tree_pids(args.server_pid) if args.server_pid else []
        tasks = (
            _stream_tasks(state, args, channels, md, rng)
            if not plan
            else [
                asyncio.create_task(
                    _worker(
                        state,
                        [(m, cs[w % n_channels], pool) for m, cs, pool in plan],
                        weights,
                        md,
                        w,
                        args.concurrency,
                        random.Random(rng.random()),
                    )
                )
                for w in range(args.concurrency)
            ]
        )
        await asyncio.sleep(args.warmup)
        state.measuring = True
        t_start = time.perf_counter()
        cpu_start = cpu_seconds(server_pids)
        client_start = _client_cpu()
        machine_start = machine_cpu()
        await asyncio.sleep(args.duration)
        state.measuring = False
        t_end = time.perf_counter()
        cpu_end = cpu_seconds(server_pids)
        client_end = _client_cpu()
        machine_end = machine_cpu()
        state.stop = True
        await asyncio.gather(*tasks)
    finally:
        for ch in channels:
            await ch.close()

    window = t_end - t_start
    items_per_call = BATCH if scenario.endswith("_batch") else 1
    return {
        "scenario": scenario,
        "concurrency": args.concurrency,
        "channels": n_channels,
        "duration_s": round(window, 4),
        "warmup_s": args.warmup,
        "ops": state.ops,
        "ops_by_method": state.ops_by_method,
        "items": state.ops * items_per_call,
        "ops_per_s": round(state.ops / window, 1),
        "items_per_s": round(state.ops * items_per_call / window, 1),
        "latency_ms": percentiles_ms(state.latencies),
        "errors": state.errors,
        "first_error": state.first_error,
        "server_cpu_s": round(cpu_end - cpu_start, 3) if server_pids else None,
        "client_cpu_s": round(client_end - client_start, 3),
        # Everything busy on the machine in the window (server, client and anyone else).
        "machine_busy_cores": round((machine_end[0] - machine_start[0]) / window, 3),
        "machine_steal_cores": round((machine_end[1] - machine_start[1]) / window, 3),
        "pool_wrapped": state.wrapped,
        "event_loop": type(asyncio.get_running_loop()).__module__.split(".")[0],
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--target", required=True, help="HOST:PORT")
    p.add_argument("--scenario", required=True, choices=SCENARIOS)
    p.add_argument("--concurrency", type=int, default=1, help="calls in flight")
    p.add_argument("--duration", type=float, default=5.0, help="measured seconds")
    p.add_argument("--warmup", type=float, default=1.5, help="seconds of load before it")
    p.add_argument("--key", default="", help="API key (the vault's dev key)")
    p.add_argument("--tokens-file", help="stored tokens to reveal, one per line")
    p.add_argument("--token-sample", type=int, default=20_000, help="tokens used for reveals")
    p.add_argument("--server-pid", type=int, help="read this process tree's CPU time")
    p.add_argument("--channels", type=int, default=4, help="most channels (connections)")
    p.add_argument("--seed", type=int, default=None)
    args = p.parse_args()
    try:
        import uvloop  # noqa: PLC0415 - optional, as in vaultctl
    except ImportError:
        result = asyncio.run(run(args))
    else:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            result = runner.run(run(args))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
