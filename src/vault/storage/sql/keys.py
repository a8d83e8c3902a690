"""Key writes, written once: data-key versions, their retirement, wrapped keys kept by
name (fingerprint keys by tenant, service keys by name) and the master key's share
scheme (``KeyWrites`` is mixed into both stores).

On PostgreSQL several replicas write at once: the first writer of a name wins (an
``ON CONFLICT DO NOTHING`` waits for a concurrent first writer's commit, then does
nothing), and retirement locks the version row FOR UPDATE while the retired-key trigger
holds it FOR KEY SHARE, so a record is never committed under a destroyed key.
"""

from __future__ import annotations

from vault.storage.base import RetireOutcome, ShareSchemeRow, WrappedKeyKind
from vault.storage.sql.columns import WRAPPED_KEY_TABLES
from vault.storage.sql.dialect import Dialect
from vault.storage.sql.tx import Abort, Tx, UniqueViolation, Writes, guarded, rows, run

__all__ = ["KeyWrites"]

_NEXT_VERSION = "SELECT coalesce(max(version), 0) + 1 FROM key_versions"
_DEMOTE = "UPDATE key_versions SET state = 'active' WHERE state = 'primary'"
_INSERT_VERSION = (
    "INSERT INTO key_versions (version, state, wrapped_key, kek_id, created_at) "
    "VALUES (?, ?, ?, ?, ?)"
)


def _add_key_version(
    d: Dialect, wrapped_key: bytes, kek_id: str, created_at: float, *, primary: bool
) -> Tx[int]:
    version = int((yield rows(_NEXT_VERSION))[0][0])
    if primary:
        yield run(_DEMOTE)
    state = "primary" if primary else "active"
    yield run(d.sql(_INSERT_VERSION), version, state, wrapped_key, kek_id, created_at)
    return version


def _add_next_key_version(
    d: Dialect, version: int, wrapped_key: bytes, kek_id: str, created_at: float
) -> Tx[bool]:
    if int((yield rows(_NEXT_VERSION))[0][0]) != version:
        return False
    yield run(_DEMOTE)
    try:
        yield guarded(
            run(d.sql(_INSERT_VERSION), version, "primary", wrapped_key, kek_id, created_at)
        )
    except UniqueViolation:
        # Another writer took the number first: this one writes nothing (the demotion
        # above is rolled back with it).
        raise Abort(value=False) from None
    return True


def _retire_key_version(d: Dialect, version: int) -> Tx[RetireOutcome]:
    # FOR UPDATE (PostgreSQL) waits for every transaction that inserted under it (their
    # trigger holds the row FOR KEY SHARE) and keeps new ones out until this one ends.
    found = yield rows(
        d.sql("SELECT state FROM key_versions WHERE version = ?" + d.lock("FOR UPDATE")),  # noqa: S608 - constant
        version,
    )
    if not found:
        return RetireOutcome.UNKNOWN
    if found[0][0] == "primary":
        return RetireOutcome.PRIMARY
    if found[0][0] == "retired":
        return RetireOutcome.ALREADY_RETIRED
    # Inside the write transaction: no record can be added under it meanwhile.
    used = yield rows(d.sql("SELECT 1 FROM tokens WHERE key_version = ? LIMIT 1"), version)
    if used:
        return RetireOutcome.IN_USE
    yield run(
        d.sql("UPDATE key_versions SET state = 'retired', wrapped_key = NULL WHERE version = ?"),
        version,
    )
    return RetireOutcome.RETIRED


def _put_wrapped_key(
    d: Dialect, table: str, column: str, name: str, wrapped_key: bytes, kek_id: str, at: float
) -> Tx[bytes]:
    # `table` and `column` are constants of ours. A concurrent first writer makes this
    # wait for its commit, then do nothing.
    yield run(
        d.sql(
            f"INSERT INTO {table} ({column}, wrapped_key, kek_id, created_at) "  # noqa: S608
            f"VALUES (?, ?, ?, ?) ON CONFLICT ({column}) DO NOTHING"
        ),
        name,
        wrapped_key,
        kek_id,
        at,
    )
    stored = yield rows(d.sql(f"SELECT wrapped_key FROM {table} WHERE {column} = ?"), name)  # noqa: S608
    return bytes(stored[0][0])


def _replace_wrapped_key(
    d: Dialect, kind: WrappedKeyKind, name: str, old: bytes, new: bytes, kek_id: str
) -> Tx[bool]:
    table, column = WRAPPED_KEY_TABLES[kind]
    key: object = int(name) if kind is WrappedKeyKind.DATA_KEY else name
    # Compare-and-set in one statement: a concurrent replace of the same row waits for
    # the row lock, then re-checks `wrapped_key = old` against the committed row and
    # writes nothing if the other one won. A retired key (NULL) never matches, so it
    # is never revived.
    count = yield run(
        d.sql(
            f"UPDATE {table} SET wrapped_key = ?, kek_id = ? "  # noqa: S608 - constants
            f"WHERE {column} = ? AND wrapped_key = ?"
        ),
        new,
        kek_id,
        key,
        old,
    )
    return bool(count == 1)


def _put_share_scheme(d: Dialect, scheme: ShareSchemeRow) -> Tx[bool]:
    # A concurrent first writer makes this wait for its commit, then do nothing:
    # exactly one of them gets True.
    count = yield run(
        d.sql(
            "INSERT INTO kek_shares (id, kek_id, threshold, share_count, verifiers, created_at) "
            "VALUES (1, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING"
        ),
        scheme.kek_id,
        scheme.threshold,
        scheme.share_count,
        b"".join(scheme.verifiers),
        scheme.created_at,
    )
    return bool(count == 1)


class KeyWrites(Writes):
    """The key writes of the Store protocol."""

    async def add_key_version(
        self, wrapped_key: bytes, kek_id: str, created_at: float, *, primary: bool
    ) -> int:
        d = self._dialect
        # Two writers that read the same max: one gets a unique violation, runs again.
        return await self._write(
            lambda: _add_key_version(d, wrapped_key, kek_id, created_at, primary=primary),
            retry_unique=True,
        )

    async def add_next_key_version(
        self, version: int, wrapped_key: bytes, kek_id: str, created_at: float
    ) -> bool:
        d = self._dialect
        return await self._write(
            lambda: _add_next_key_version(d, version, wrapped_key, kek_id, created_at)
        )

    async def retire_key_version(self, version: int) -> RetireOutcome:
        return await self._write(lambda: _retire_key_version(self._dialect, version))

    async def put_fingerprint_key(
        self, tenant: str, wrapped_key: bytes, kek_id: str, created_at: float
    ) -> bytes:
        d, table = self._dialect, "fingerprint_keys"
        return await self._write(
            lambda: _put_wrapped_key(d, table, "tenant", tenant, wrapped_key, kek_id, created_at),
            retry_unique=True,
        )

    async def put_service_key(
        self, name: str, wrapped_key: bytes, kek_id: str, created_at: float
    ) -> bytes:
        d, table = self._dialect, "service_keys"
        return await self._write(
            lambda: _put_wrapped_key(d, table, "name", name, wrapped_key, kek_id, created_at),
            retry_unique=True,
        )

    async def replace_wrapped_key(
        self, kind: WrappedKeyKind, name: str, old: bytes, new: bytes, kek_id: str
    ) -> bool:
        d = self._dialect
        return await self._write(lambda: _replace_wrapped_key(d, kind, name, old, new, kek_id))

    async def put_share_scheme(self, scheme: ShareSchemeRow) -> bool:
        d = self._dialect
        return await self._write(lambda: _put_share_scheme(d, scheme), retry_unique=True)
