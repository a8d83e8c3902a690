"""The audit chaining the stores call: it lives in the audit package (vault.audit.chain),
which alone knows the record encoding; re-exported here for the stores."""

from __future__ import annotations

from vault.audit.chain import AuditChain, AuditChainBrokenError, chain_audits, check_head

__all__ = ["AuditChain", "AuditChainBrokenError", "chain_audits", "check_head"]
