"""Count the SQL statements, transactions and network round trips one Tokenize and one
Detokenize make on PostgreSQL (issue 14, item 3), so the figure is reproducible.

    .venv/bin/python bench/pg_roundtrips.py [--calls 50] [--json out.json]

A throwaway cluster (the tests' pgcluster.py) runs with pg_stat_statements; the vault
(`vaultctl serve --dev --database-url`) reaches its store through a small TCP relay that
counts round trips: one round trip is a burst of client->server bytes after the server
last answered (asyncpg's pipelined Bind/Execute...Sync is one). Calls are made one at a
time (so each group commit holds exactly one call) after a warm-up that fills the pool
and the statement caches; the counts are per call, averaged over ``--calls``.
The subject keys live in a database of their own, not relayed (not on the hot path).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from pgcluster import PgCluster, find_pg_bin
from workload import PURPOSE, random_pans

from vault.v1 import token_service_pb2 as pb

VAULTCTL = str(Path(sys.executable).parent / "vaultctl")
VAULT = "/vault.v1.TokenService/"
LISTENING = re.compile(r"listening on [0-9.]+:(\d+)")
PAN = 1  # DATA_KIND_PAN
WARMUP_CALLS = 20


@dataclass
class Relay:
    """A TCP relay to PostgreSQL counting client->server round trips."""

    upstream_port: int
    round_trips: int = 0
    server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        sr, sw = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        answered = [True]  # the server has spoken since the client last sent

        async def up() -> None:
            while data := await cr.read(65536):
                if answered[0]:
                    self.round_trips += 1
                    answered[0] = False
                sw.write(data)
                await sw.drain()
            sw.close()

        async def down() -> None:
            while data := await sr.read(65536):
                answered[0] = True
                cw.write(data)
                await cw.drain()
            cw.close()

        await asyncio.gather(up(), down(), return_exceptions=True)


SAVEPOINT_NAME = re.compile(r"__asyncpg_savepoint_\w+__")


def _top_statements(cluster: PgCluster, db: str, since: dict[str, int]) -> dict[str, int]:
    rows = cluster.psql(
        db,
        "SELECT s.calls, regexp_replace(s.query, '\\s+', ' ', 'g') FROM pg_stat_statements s "
        "JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = current_database() "
        "AND s.query NOT ILIKE '%pg_stat%'",
    )
    out: dict[str, int] = {}
    for line in rows.splitlines():
        n, _, q = line.partition("|")
        q = SAVEPOINT_NAME.sub("<name>", q)[:120]
        out[q] = out.get(q, 0) + int(n)
    return {q: n - since.get(q, 0) for q, n in out.items() if n > since.get(q, 0)}


async def _measure(
    args: argparse.Namespace, cluster: PgCluster, db: str, relay: Relay, port: int, key: str
) -> dict[str, Any]:
    md = (("authorization", f"Bearer {key}"),)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        tok = ch.unary_unary(VAULT + "Tokenize")
        detok = ch.unary_unary(VAULT + "Detokenize")
        pans = random_pans(args.calls + WARMUP_CALLS, random.Random(14))
        tokens: list[str] = []
        for pan in pans[:WARMUP_CALLS]:
            raw = await tok(pb.TokenizeRequest(kind=PAN, text=pan).SerializeToString(), metadata=md)
            tokens.append(pb.TokenizeResponse.FromString(raw).token)
        for t in tokens:
            await detok(
                pb.DetokenizeRequest(token=t, purpose=PURPOSE).SerializeToString(), metadata=md
            )
        out: dict[str, Any] = {}
        for name in ("tokenize", "detokenize"):
            before_q = _top_statements(cluster, db, {})
            trips = relay.round_trips
            for i in range(args.calls):
                if name == "tokenize":
                    req = pb.TokenizeRequest(kind=PAN, text=pans[WARMUP_CALLS + i])
                    raw = await tok(req.SerializeToString(), metadata=md)
                    tokens.append(pb.TokenizeResponse.FromString(raw).token)
                else:
                    req2 = pb.DetokenizeRequest(token=tokens[-1 - i], purpose=PURPOSE)
                    await detok(req2.SerializeToString(), metadata=md)
            trips = relay.round_trips - trips
            # (The stats queries run over psql's own connection, not through the relay.)
            stmts = _top_statements(cluster, db, before_q)
            n = args.calls
            out[name] = {
                "calls": n,
                "round_trips_per_call": round(trips / n, 2),
                "statements_per_call": round(sum(stmts.values()) / n, 2),
                "transactions_per_call": round(stmts.get("BEGIN", 0) / n, 2),
                "statements": stmts,
            }
    return out


def _start_vault(data_dir: Path, url: str, keys_url: str) -> tuple[subprocess.Popen[str], int]:
    cmd = [VAULTCTL, "serve", "--dev", "--data-dir", str(data_dir), "--listen", "127.0.0.1:0"]
    cmd += ["--database-url", url, "--subject-key-database-url", keys_url]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if m := LISTENING.search(line):
            return proc, int(m.group(1))
    msg = f"vault exited at start ({proc.wait()})"
    raise RuntimeError(msg)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    bin_dir = find_pg_bin()
    if bin_dir is None:
        msg = "PostgreSQL is not installed (no initdb)"
        raise SystemExit(msg)
    cluster = PgCluster(bin_dir, durable=True)
    cluster.start()
    try:
        with (cluster.data / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write("shared_preload_libraries = 'pg_stat_statements'\n")
            conf.write("pg_stat_statements.track = 'all'\n")
        cluster.stop_server()  # (restart would keep pg_ctl's output pipe open)
        cluster.start_server()
        db, keys_db = cluster.create_database(), cluster.create_database()
        cluster.psql(db, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        relay = Relay(cluster.port)
        relay_port = await relay.start()
        url = cluster.url(db).replace(f":{cluster.port}/", f":{relay_port}/")
        with tempfile.TemporaryDirectory(prefix="vault-rt-") as tmp:
            proc, port = await asyncio.to_thread(_start_vault, Path(tmp), url, cluster.url(keys_db))
            try:
                key = (Path(tmp) / "dev-api-key").read_text().strip()
                return await _measure(args, cluster, db, relay, port, key)
            finally:
                proc.terminate()
                await asyncio.to_thread(proc.wait, 30)
    finally:
        cluster.destroy()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", type=int, default=50, help="calls measured per method")
    p.add_argument("--json", type=Path, help="also write the counts here")
    args = p.parse_args()
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    out = asyncio.run(main_async(args))
    for name, row in out.items():
        print(
            f"{name:<11} round trips/call {row['round_trips_per_call']:>5}  "
            f"statements/call {row['statements_per_call']:>5}  "
            f"transactions/call {row['transactions_per_call']:>5}"
        )
        for q, n in sorted(row["statements"].items(), key=lambda kv: -kv[1]):
            print(f"    {n / row['calls']:>5.2f}  {q}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
