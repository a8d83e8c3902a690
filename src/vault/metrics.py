"""Prometheus metrics. Labels are method names, status codes and kinds: never values."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "AUDIT_EVENTS_DROPPED",
    "AUDIT_WRITE_FAILURES",
    "AUTH_FAILURES",
    "COMMIT_BATCH",
    "JOB_LEASE_HELD",
    "KEY_AGE",
    "KEY_ENCRYPTIONS",
    "KEY_USAGE_RATIO",
    "REWRAP_LAST_PROGRESS",
    "REWRAP_RECORDS",
    "REWRAP_REMAINING",
    "RPC_CALLS",
    "RPC_LATENCY",
    "SEALED",
    "TOKENIZE_ITEMS",
    "TOKENIZE_REFUSED",
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
# Every failed audit append. Its call was refused: a reveal fails closed, a refusal stays one.
AUDIT_WRITE_FAILURES = Counter(
    "vault_audit_write_failures", "Audit appends that failed (their calls were refused)"
)
# While sealed, audit events wait in memory for the audit key; one past its budget there
# is dropped and counted here (unseal submissions have a budget anonymous calls cannot use).
AUDIT_EVENTS_DROPPED = Counter(
    "vault_audit_events_dropped",
    "Audit events dropped while sealed because the pending buffer was full, by action",
    ["action"],
)
# Key rotation and rewrap (names used by the deploy alert rules). Rewrap progress is
# read from the store, so every server exports the progress of a rewrap any process runs.
KEY_USAGE_RATIO = Gauge(
    "vault_key_usage_ratio", "Encryptions of the primary data key / key_max_encryptions"
)
KEY_AGE = Gauge("vault_key_age_seconds", "Age of the primary data key")
REWRAP_REMAINING = Gauge(
    "vault_rewrap_remaining_records", "Records the latest rewrap run has still to move"
)
REWRAP_RECORDS = Counter("vault_rewrap_records", "Records moved to the primary by rewraps")
REWRAP_LAST_PROGRESS = Gauge(
    "vault_rewrap_last_progress_timestamp_seconds",
    "Unix time of the latest rewrap run's last batch (or of its start or end)",
)
SEALED = Gauge("vault_sealed", "1 while the vault waits for custodian shares (unseal), else 0")
JOB_LEASE_HELD = Gauge(
    "vault_job_lease_held",
    "1 while this process holds the background job's lease (runs it), else 0",
    ["job"],
)
TOKENS_RETENTION_PURGED = Counter(
    "vault_tokens_retention_purged",
    "Values purged by the retention job (past their tenant's maximum age), by data kind",
    ["kind"],
)
# Tokenize volume per caller (names are chosen by ops with `vaultctl callers add`, so the
# label is bounded; never tenant data): harvesting shows as a caller's rate jumping, and
# its budget refusals (TOKENIZE_RATE_EXCEEDED, counted in items) page.
TOKENIZE_ITEMS = Counter(
    "vault_tokenize_items", "Values tokenized (items of calls that passed), by caller", ["caller"]
)
TOKENIZE_REFUSED = Counter(
    "vault_tokenize_budget_refused_items",
    "Items refused because the caller's tokenize budget was spent, by caller",
    ["caller"],
)
