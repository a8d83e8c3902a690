"""What both stores are made of: every Store method written once in this package, as
one base class. A store subclasses it and adds its connections, its driver loop (how a
write's statements run and commit) and its dialect's own statements."""

from __future__ import annotations

from vault.storage.sql.audit_index import AuditSql
from vault.storage.sql.callers import CallerWrites
from vault.storage.sql.keys import KeyWrites
from vault.storage.sql.leases import LeaseSql
from vault.storage.sql.retention import RetentionSql
from vault.storage.sql.routes import SqlRoutes
from vault.storage.sql.subjects import SubjectWrites
from vault.storage.sql.tokens import TokenWrites

__all__ = ["SqlStore"]


class SqlStore(
    TokenWrites,
    KeyWrites,
    CallerWrites,
    SubjectWrites,
    RetentionSql,
    LeaseSql,
    SqlRoutes,
    AuditSql,
):
    """The Store methods both stores share (each mixin is one aggregate's)."""
