"""Prometheus metrics. Labels are method names, status codes and kinds: never values."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "AUTH_FAILURES",
    "COMMIT_BATCH",
    "KEY_ENCRYPTIONS",
    "RPC_CALLS",
    "RPC_LATENCY",
    "TOKENS_CREATED",
    "TOKENS_PURGED",
    "TOKENS_RETENTION_PURGED",
    "TOKENS_REVEALED",
]

RPC_CALLS = Counter(
    "vault_rpc_calls", "RPCs handled, by method and status code", ["method", "code"]
)
RPC_LATENCY = Histogram(
    "vault_rpc_latency_seconds",
    "RPC handling time in the server, by method",
    ["method"],
    buckets=(0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0),
)
TOKENS_CREATED = Counter("vault_tokens_created", "Tokens created, by data kind", ["kind"])
TOKENS_REVEALED = Counter("vault_tokens_revealed", "Values revealed, by data kind", ["kind"])
TOKENS_PURGED = Counter("vault_tokens_purged", "Expired tokens purged")
AUTH_FAILURES = Counter(
    "vault_auth_failures", "Refused credentials and scopes, by reason", ["reason"]
)
COMMIT_BATCH = Histogram(
    "vault_store_commit_records",
    "Records per group commit",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096),
)
KEY_ENCRYPTIONS = Gauge(
    "vault_key_encryptions", "Encryptions done under each data-key version", ["version"]
)
TOKENS_RETENTION_PURGED = Counter(
    "vault_tokens_retention_purged",
    "Values purged by the retention job (past their tenant's maximum age), by data kind",
    ["kind"],
)
