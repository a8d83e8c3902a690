"""Column lists and the SQL text that is the same in every dialect."""

from __future__ import annotations

from vault.storage.base import WrappedKeyKind

__all__ = [
    "AUDIT_COLUMNS",
    "CALLER_COLUMNS",
    "HELD",
    "PROGRESS_COLUMNS",
    "P_PROGRESS_COLUMNS",
    "TOKEN_COLUMNS",
    "T_COLUMNS",
    "WRAPPED_KEYS_SQL",
    "WRAPPED_KEY_TABLES",
    "prefixed",
]


def prefixed(columns: str, alias: str) -> str:
    """The column list with every column qualified by a table alias."""
    return ", ".join(f"{alias}.{c.strip()}" for c in columns.split(","))


# A token row, in the order token_from_row and token_params use.
TOKEN_COLUMNS = (
    "token, tenant, kind, token_format, key_version, ciphertext, fingerprint, "
    "deterministic, subject_ref, request_id, request_hash, created_at, expires_at"
)
T_COLUMNS = prefixed(TOKEN_COLUMNS, "t")
# A caller row, in the order caller_from_row and caller_params use.
CALLER_COLUMNS = (
    "name, tenant, scopes, key_id, key_hash, created_at, expires_at, revoked_at, "
    "cert_identity, reveal_kinds, reveal_rate, reveal_burst, tokenize_rate, tokenize_burst"
)
# An audit row, in the order audit_from_row and the chain's parameters use.
AUDIT_COLUMNS = (
    "seq, time, caller, tenant, action, tokens, purpose, outcome, reason, request_id, "
    "peer, detail, mac"
)
# The rewrap progress row (one row, id 1).
PROGRESS_COLUMNS = (
    "holder, primary_version, batch_size, rate, started_at, last_batch_at, finished_at, "
    "batches, rewrapped, skipped, failed, remaining"
)
P_PROGRESS_COLUMNS = prefixed(PROGRESS_COLUMNS, "p")

# Where each kind of wrapped key lives: (table, name column).
WRAPPED_KEY_TABLES = {
    WrappedKeyKind.DATA_KEY: ("key_versions", "version"),
    WrappedKeyKind.FINGERPRINT_KEY: ("fingerprint_keys", "tenant"),
    WrappedKeyKind.SERVICE_KEY: ("service_keys", "name"),
}
# Every wrapped key, in one statement (one snapshot): the data keys not destroyed, the
# tenants' fingerprint keys and the service keys, as (kind, name, wrapped_key, kek_id).
WRAPPED_KEYS_SQL = (
    "SELECT 'data_key', CAST(version AS TEXT), wrapped_key, kek_id FROM key_versions "
    "WHERE wrapped_key IS NOT NULL "
    "UNION ALL SELECT 'fingerprint_key', tenant, wrapped_key, kek_id FROM fingerprint_keys "
    "UNION ALL SELECT 'service_key', name, wrapped_key, kek_id FROM service_keys"
)
# A token row whose subject is under legal hold (`tokens` is the row's table name).
HELD = (
    "tokens.subject_ref IS NOT NULL AND EXISTS (SELECT 1 FROM subject_holds h "
    "WHERE h.tenant = tokens.tenant AND h.subject_ref = tokens.subject_ref)"
)
