"""Token writes, written once: insert resolution around the group commit, corrections,
deletion and the TTL purge (``TokenWrites`` is mixed into both stores).

The insert path: the common case (no deterministic record, no request id) is one
guarded executemany, and only a taken token sends it to the full resolution: the
stored rows sharing a token, deterministic key or request id are looked up, the
expired ones among them deleted (unless their subject is under legal hold: then they
count as live), InsertResolver decides per call, and the survivors are written. On
PostgreSQL an unguarded unique violation here means a concurrent transaction won a
race after the look-up: the store runs the transaction again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

from vault.storage.base import InsertOutcome, InsertStatus, TokenRecord, TokenUpdate, UpdateStatus
from vault.storage.sql.batch import InsertOp
from vault.storage.sql.codecs import token_from_row, token_params
from vault.storage.sql.columns import HELD, T_COLUMNS, TOKEN_COLUMNS
from vault.storage.sql.dialect import Dialect
from vault.storage.sql.resolution import InsertResolver
from vault.storage.sql.tx import Tx, UniqueViolation, Writes, guarded, many, rows, run

__all__ = ["TokenWrites", "apply_inserts", "delete_unheld"]

_INSERTED = InsertOutcome(InsertStatus.INSERTED)
_Reserved = tuple[str, str, bytes, int]  # (tenant, request id, request hash, row id)


def apply_inserts(d: Dialect, ops: Sequence[InsertOp]) -> Tx[int]:
    """Resolve collisions, deterministic and idempotent hits, insert the rest and count
    the calls' encryptions; returns the rows inserted."""
    records = [r for op in ops for r in op.records]
    inserted = -1
    if not any(r.deterministic or r.request_id for r in records):
        try:
            yield guarded(
                many(d.insert("tokens", TOKEN_COLUMNS), [token_params(r) for r in records])
            )
        except UniqueViolation:
            pass  # a taken token: resolve below
        else:
            for op in ops:
                op.outcomes = [_INSERTED] * len(op.records)
            inserted = len(records)
    if inserted < 0:
        inserted = yield from _resolve_inserts(d, ops, records)
    yield from _count_encryptions(d, ops)
    return inserted


def _resolve_inserts(d: Dialect, ops: Sequence[InsertOp], records: list[TokenRecord]) -> Tx[int]:
    now = max(op.now for op in ops)
    # Random tokens carry 160 bits: only PAN-shaped tokens can realistically collide,
    # but all are checked, also against rows that expired and wait for the purge.
    existing, reserved = yield from _existing_for(d, records)
    expired = [row_id for row_id, rec in existing.items() if not rec.live(now)]
    held: set[int] = set()
    if expired:
        # Dead rows: free their token, deterministic key and request id for reuse; but
        # expired rows of a subject under legal hold are kept, and count as live.
        _, held = yield from delete_unheld(d, expired)
    resolver = InsertResolver([rec for i, rec in existing.items() if rec.live(now) or i in held])
    for tenant, request_id, request_hash, row_id in reserved:
        if existing[row_id].live(now) or row_id in held:
            resolver.by_request[(tenant, request_id)] = (request_hash, existing[row_id])
    for op in ops:
        op.outcomes = resolver.resolve(op.records)
    if resolver.to_insert:
        yield many(d.insert("tokens", TOKEN_COLUMNS), [token_params(r) for r in resolver.to_insert])
    if resolver.reservations:
        yield many(
            d.insert("request_ids", "tenant, request_id, request_hash, token"),
            resolver.reservations,
        )
    return len(resolver.to_insert)


def _existing_for(
    d: Dialect, records: Sequence[TokenRecord]
) -> Tx[tuple[dict[int, TokenRecord], list[_Reserved]]]:
    """Stored rows (by id) sharing a token, deterministic key or request id with records,
    and the request ids reserved by deterministic hits."""
    found: dict[int, TokenRecord] = {}
    reserved: list[_Reserved] = []
    select = f"SELECT id, {TOKEN_COLUMNS} FROM tokens WHERE "  # noqa: S608 - constant
    where = d.any_of("token", list(dict.fromkeys(r.token for r in records)), "text")
    det = [(r.tenant, r.kind, r.token_format, r.fingerprint) for r in records if r.deterministic]
    if det:
        key, casts = "tenant, kind, token_format, fingerprint", ("text", "int", "int", "bytea")
        where += [
            (f"{d.flag('deterministic')} AND {cond}", params)
            for cond, params in d.tuple_in(key, casts, det)
        ]
    req = [(r.tenant, r.request_id) for r in records if r.request_id]
    by_request = d.tuple_in("tenant, request_id", ("text", "text"), req) if req else []
    where += [(f"request_id IS NOT NULL AND {c}", p) for c, p in by_request]
    reserved_by = d.tuple_in("r.tenant, r.request_id", ("text", "text"), req) if req else []
    for cond, params in where:
        for row in (yield rows(d.sql(select + cond), *params)):
            found[int(row[0])] = token_from_row(row, 1)
    for cond, params in reserved_by:
        sql = (
            f"SELECT r.tenant, r.request_id, r.request_hash, t.id, {T_COLUMNS} "  # noqa: S608
            "FROM request_ids r JOIN tokens t ON t.token = r.token "
            f"WHERE {cond}"
        )
        for row in (yield rows(d.sql(sql), *params)):
            found[int(row[3])] = token_from_row(row, 4)
            reserved.append((row[0], row[1], bytes(row[2]), int(row[3])))
    return found, reserved


def delete_unheld(d: Dialect, ids: Sequence[int]) -> Tx[tuple[set[int], set[int]]]:
    """Delete the rows unless their subject is under legal hold; returns the ids deleted
    and the ids kept because held (rows gone meanwhile are in neither).

    PostgreSQL: the rows are locked FOR UPDATE first and the holds read by a later
    statement: under READ COMMITTED that one sees a hold committed while this waited
    for a row (set_subject_hold locks the subject's rows FOR KEY SHARE), so none is
    missed. SQLite: the write transaction already excludes every other writer."""
    present = list(ids)
    if d.row_locks:
        locked = yield rows(
            d.sql("SELECT id FROM tokens WHERE id = ANY(?::bigint[]) ORDER BY id FOR UPDATE"),
            present,
        )
        present = [int(r[0]) for r in locked]
    if not present:
        return set(), set()
    deleted: set[int] = set()
    for cond, params in d.any_of("id", present, "bigint"):
        gone = yield rows(
            d.sql(f"DELETE FROM tokens WHERE {cond} AND NOT ({HELD}) RETURNING id"),  # noqa: S608 - constant
            *params,
        )
        deleted |= {int(r[0]) for r in gone}
    return deleted, set(present) - deleted


def _count_encryptions(d: Dialect, ops: Sequence[InsertOp]) -> Tx[None]:
    """Add the calls' encryptions (inserted or not) to the counters. Last in the
    transaction, in version order: on PostgreSQL the counter row is the hottest lock
    of the schema, held until commit."""
    usage: dict[int, int] = {}
    for op in ops:
        for version, count in op.encryptions.items():
            usage[version] = usage.get(version, 0) + count
    if usage:
        yield many(
            d.sql("UPDATE key_versions SET encryptions = encryptions + ? WHERE version = ?"),
            [(usage[v], v) for v in sorted(usage)],
        )


def _update_token(d: Dialect, u: TokenUpdate) -> Tx[UpdateStatus]:
    # Compare-and-set; FOR UPDATE (PostgreSQL): a concurrent correction of the same row
    # waits, then finds the ciphertext changed.
    found = yield rows(
        d.sql(
            f"SELECT id, {TOKEN_COLUMNS} FROM tokens "  # noqa: S608 - constant
            "WHERE token = ? AND tenant = ? AND key_version = ? AND ciphertext = ?"
            + d.lock("FOR UPDATE")
        ),
        u.token,
        u.tenant,
        u.old_version,
        u.old_ciphertext,
    )
    if not found:
        return UpdateStatus.CHANGED
    row_id, rec = int(found[0][0]), token_from_row(found[0], 1)
    if rec.deterministic:
        twins = yield rows(
            d.sql(
                f"SELECT id, {TOKEN_COLUMNS} FROM tokens WHERE {d.flag('deterministic')} "  # noqa: S608 - constant
                "AND tenant = ? AND kind = ? AND token_format = ? AND fingerprint = ? AND id <> ?"
            ),
            rec.tenant,
            rec.kind,
            rec.token_format,
            u.new_fingerprint,
            row_id,
        )
        if twins:
            if token_from_row(twins[0], 1).live(u.now):
                return UpdateStatus.DETERMINISTIC_EXISTS
            # Expired: its deterministic key is free again, unless it is held.
            _, held = yield from delete_unheld(d, [int(twins[0][0])])
            if held:
                return UpdateStatus.DETERMINISTIC_EXISTS
    # PostgreSQL: a twin committed meanwhile makes this a unique violation; the store
    # runs the transaction again, and the look-up above finds it.
    yield run(
        d.sql("UPDATE tokens SET ciphertext = ?, key_version = ?, fingerprint = ? WHERE id = ?"),
        u.new_ciphertext,
        u.new_version,
        u.new_fingerprint,
        row_id,
    )
    yield run(
        d.sql("UPDATE key_versions SET encryptions = encryptions + 1 WHERE version = ?"),
        u.new_version,
    )
    return UpdateStatus.UPDATED


def _delete_token(d: Dialect, tenant: str, token: str) -> Tx[bool]:
    count = yield run(d.sql("DELETE FROM tokens WHERE token = ? AND tenant = ?"), token, tenant)
    return bool(count > 0)


def _purge_expired(d: Dialect, now: float, limit: int) -> Tx[int]:
    # Never a held subject's row, even one held while this runs (delete_unheld).
    due = yield rows(
        d.sql(
            "SELECT id FROM tokens WHERE expires_at IS NOT NULL AND expires_at <= ? "  # noqa: S608 - constant
            f"AND NOT ({HELD}) ORDER BY expires_at LIMIT ?"
        ),
        now,
        limit,
    )
    if not due:
        return 0
    deleted, _ = yield from delete_unheld(d, [int(r[0]) for r in due])
    return len(deleted)


class TokenWrites(Writes):
    """The token writes of the Store protocol."""

    async def insert_tokens(
        self, records: Sequence[TokenRecord], now: float, encryptions: Mapping[int, int]
    ) -> list[InsertOutcome]:
        if not records:
            return []
        future: asyncio.Future[list[InsertOutcome]] = asyncio.get_running_loop().create_future()
        self._submit(InsertOp(records, now, encryptions, future))
        return await future

    async def update_token(self, update: TokenUpdate) -> UpdateStatus:
        return await self._write(lambda: _update_token(self._dialect, update), retry_unique=True)

    async def delete_token(self, tenant: str, token: str) -> bool:
        return await self._write(lambda: _delete_token(self._dialect, tenant, token))

    async def purge_expired(self, now: float, limit: int) -> int:
        return await self._write(lambda: _purge_expired(self._dialect, now, limit))
