"""The audit trail: events appended durably through the store, chained by HMAC.

Each record's ``mac = HMAC-SHA-256(audit key, previous mac || record.content())``; the
first chains from 32 zero bytes. The audit key is random, wrapped by the master key
under the label ``audit:1``, and stored in the store (first writer wins). The store runs
``seal`` inside its write transaction, so it never holds the key and several vault
processes on one store extend one chain.

Creating the audit key writes the genesis head (seq 0) in the same transaction; the
store refuses to append when the head does not seal the newest row (AuditChainBrokenError:
counted in vault_audit_chain_broken, the call fails closed). The head is published to the
sink every ``head_interval`` seconds, for ``check_witness`` (``audit verify --witness``).

``verify`` walks the chain from seq 1 and names the first bad record: missing (deleted),
edited (its MAC does not match), reordered (it verifies at another position) or
inserted (a foreign row, or one past the sealed head).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import logging
import os
import struct
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from vault import metrics
from vault.audit.base import AuditEvent
from vault.audit.chain import AuditChainBrokenError, genesis_head, head_verifies
from vault.clock import Clock
from vault.crypto.base import KekProvider
from vault.crypto.keyring import new_data_key
from vault.errors import FailedPreconditionError
from vault.secrets import SecretBytes
from vault.storage.base import AUDIT_GENESIS_MAC, AUDIT_KEY_NAME, AuditHead, AuditRow, Store

__all__ = [
    "AUDIT_KEY_NAME",
    "AuditTrail",
    "ChainBreak",
    "JsonLinesExporter",
    "VerifyResult",
    "record_dict",
    "record_line",
]

log = logging.getLogger(__name__)

_VERIFY_CHUNK = 1000
# Default seconds between heads published to the audit sink.
HEAD_INTERVAL = 60.0


def record_dict(row: AuditRow) -> dict[str, Any]:
    """A stored record as JSON-ready data (the JSON-lines sink and `audit tail --json`)."""
    return {
        "seq": row.seq,
        "time": datetime.fromtimestamp(row.time, UTC).isoformat(timespec="microseconds"),
        "caller": row.caller,
        "tenant": row.tenant,
        "action": row.action,
        "tokens": list(row.tokens),
        "purpose": row.purpose,
        "outcome": row.outcome,
        "reason": row.reason,
        "request_id": row.request_id,
        "peer": row.peer,
        "detail": dict(row.detail),
        "mac": row.mac.hex(),
    }


def record_line(row: AuditRow) -> str:
    """A stored record as one line for people."""
    when = datetime.fromtimestamp(row.time, UTC).isoformat(timespec="milliseconds")
    parts = [
        f"#{row.seq}",
        when,
        row.action,
        row.outcome + (f"/{row.reason}" if row.reason else ""),
    ]
    parts.append(f"caller={row.caller or '-'}")
    if row.tenant:
        parts.append(f"tenant={row.tenant}")
    if row.tokens:
        parts.append("tokens=" + ",".join(row.tokens))
    if row.purpose:
        parts.append(f"purpose={json.dumps(row.purpose)}")
    parts.extend(f"{k}={v}" for k, v in row.detail)
    if row.request_id:
        parts.append(f"request={row.request_id}")
    if row.peer:
        parts.append(f"peer={row.peer}")
    return " ".join(parts)


class JsonLinesExporter:
    """Writes each committed record as one JSON line, to stdout or appended to a file,
    for shipping to a central log store. A copy only: the store is the trail."""

    def __init__(self, out: TextIO | None = None, fd: int | None = None) -> None:
        self._out = out
        self._fd = fd

    def __repr__(self) -> str:
        return "JsonLinesExporter()"

    @classmethod
    def from_setting(cls, setting: str) -> JsonLinesExporter | None:
        """``""`` = off, ``"stdout"``, or a file path (created 0600, appended to)."""
        if not setting:
            return None
        if setting == "stdout":
            return cls(out=sys.stdout)
        try:
            fd = os.open(Path(setting), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        except OSError:
            raise FailedPreconditionError(
                "the audit sink file cannot be opened", reason="AUDIT_SINK_UNAVAILABLE"
            ) from None
        return cls(fd=fd)

    def write(self, rows: Sequence[AuditRow]) -> None:
        text = "".join(
            json.dumps(record_dict(r), separators=(",", ":"), ensure_ascii=False) + "\n"
            for r in rows
        )
        # One write per commit on an O_APPEND file: lines of processes sharing the file
        # do not interleave.
        self._emit(text)

    def write_head(self, head: AuditHead) -> None:
        """Publish the head (seq and MAC, no data) as an outside witness: one line
        ``{"audit_head": {"seq": N, "mac": HEX}}`` that `vaultctl audit verify --witness`
        reads back."""
        line = {"audit_head": {"seq": head.seq, "mac": head.mac.hex()}}
        self._emit(json.dumps(line, separators=(",", ":")) + "\n")

    def _emit(self, text: str) -> None:
        if self._fd is not None:
            os.write(self._fd, text.encode())
        elif self._out is not None:
            self._out.write(text)
            self._out.flush()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


@dataclass(frozen=True, slots=True)
class ChainBreak:
    seq: int  # the first bad record's seq
    problem: str  # missing (deleted) | edited (mac mismatch) | reordered | inserted

    def __str__(self) -> str:
        return f"audit trail broken at seq {self.seq}: {self.problem}"


@dataclass(frozen=True, slots=True)
class VerifyResult:
    records: int  # records that verified (all of them when intact)
    broken: ChainBreak | None  # the first bad record; None when intact

    @property
    def intact(self) -> bool:
        return self.broken is None


class AuditTrail:
    """Appends events to the store's chain (the AuditSink of the use cases) and verifies it.

    Keeps a pre-keyed HMAC and copies it per record.
    """

    __slots__ = ("_base", "_exporter", "_published", "_store", "head_interval")

    def __init__(
        self, store: Store, key: SecretBytes, exporter: JsonLinesExporter | None = None
    ) -> None:
        self._store = store
        self._base = hmac.new(key.reveal(), digestmod=hashlib.sha256)
        self._exporter = exporter
        # Seconds between heads published to the sink (the outside witness).
        self.head_interval = HEAD_INTERVAL
        self._published = time.monotonic()

    def __repr__(self) -> str:
        return "AuditTrail()"

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("AuditTrail cannot be pickled")

    @classmethod
    async def open(
        cls,
        store: Store,
        kek: KekProvider,
        clock: Clock,
        exporter: JsonLinesExporter | None = None,
        *,
        create: bool = True,
    ) -> AuditTrail:
        """The trail under the store's audit key, created (``create``) on first use."""
        label = AUDIT_KEY_NAME.encode()
        wrapped = await store.service_key(AUDIT_KEY_NAME)
        if wrapped is None:
            if not create:
                raise FailedPreconditionError(
                    "the store has no audit key", reason="AUDIT_KEY_MISSING"
                )
            key = new_data_key()
            # The genesis head is sealed with the new key and stored with it, in one
            # transaction: a store with an audit key and no head is broken, not empty.
            genesis = genesis_head(cls(store, key).seal)
            wrapped = await store.put_service_key(
                AUDIT_KEY_NAME, kek.wrap(key, label), kek.kek_id, clock.now(), genesis
            )
        return cls(store, kek.unwrap(wrapped, label), exporter)

    def seal(self, prev_mac: bytes, content: bytes) -> bytes:
        mac = self._base.copy()
        mac.update(prev_mac)
        mac.update(content)
        return mac.digest()

    async def record(self, events: Sequence[AuditEvent]) -> None:
        """Append the events durably (one store call, one group commit), then export them."""
        rows = [
            AuditRow(
                0,
                e.time,
                e.caller,
                e.tenant,
                e.action,
                e.tokens,
                e.purpose,
                e.outcome,
                e.reason,
                e.request_id,
                e.peer,
                tuple(sorted(e.detail.items())) if e.detail else (),
                b"",
            )
            for e in events
        ]
        try:
            stored = await self._store.append_audit(rows, self.seal)
        except AuditChainBrokenError:
            # Refused in the store, nothing appended, nothing repaired: the use case
            # fails closed (AUDIT_UNAVAILABLE) until an operator investigates.
            metrics.AUDIT_WRITE_FAILURES.inc()
            metrics.AUDIT_CHAIN_BROKEN.set(1)
            log.error("audit chain broken: appends refused; run vaultctl audit verify")
            raise
        except Exception:
            metrics.AUDIT_WRITE_FAILURES.inc()
            raise
        if stored:
            metrics.AUDIT_HEAD_SEQ.set(stored[-1].seq)
        if self._exporter is not None and stored:
            try:
                self._exporter.write(stored)
                await self._maybe_publish_head()
            except OSError as exc:  # the copy failing must not fail the committed call
                log.error("audit export failed: %s", type(exc).__name__)

    async def _maybe_publish_head(self) -> None:
        """Every head_interval seconds (on the next append), the head to the sink."""
        now = time.monotonic()
        if self._exporter is None or now - self._published < self.head_interval:
            return
        head = await self._store.audit_head()
        if head is not None:
            self._published = now
            self._exporter.write_head(head)

    def close(self) -> None:
        if self._exporter is not None:
            self._exporter.close()

    # -- verification ------------------------------------------------------------

    def _verifies(self, prev_mac: bytes, row: AuditRow, seq: int) -> bool:
        """Does ``row`` verify at position ``seq`` after a record whose MAC is prev_mac?"""
        try:
            content = dataclasses.replace(row, seq=seq).content()
        except (struct.error, TypeError, UnicodeError):
            return False  # a field edited to another type
        return hmac.compare_digest(self.seal(prev_mac, content), row.mac)

    async def _verifies_elsewhere(self, row: AuditRow) -> bool:
        """Does the row verify at some other position (after some other record)?"""
        if self._verifies(AUDIT_GENESIS_MAC, row, 1) and row.seq != 1:
            return True
        after = 0
        while True:
            chunk = await self._store.audit_records(after, _VERIFY_CHUNK)
            for other in chunk:
                if other.seq + 1 != row.seq and self._verifies(other.mac, row, other.seq + 1):
                    return True
            if len(chunk) < _VERIFY_CHUNK:
                return False
            after = chunk[-1].seq

    async def _classify(self, prev_mac: bytes, bad: AuditRow) -> str:
        """Why ``bad`` (at the expected seq, after a good record) does not verify."""
        following = await self._store.audit_records(bad.seq, 1)
        if following and self._verifies(prev_mac, following[0], bad.seq):
            # The next row is the record that belongs here: the bad one was moved here
            # from its own place (reordered) or never was in the chain (inserted).
            if self._verifies(following[0].mac, bad, bad.seq + 1):
                return f"reordered (swapped with seq {bad.seq + 1})"
            if await self._verifies_elsewhere(bad):
                return "reordered"
            return "inserted (a row that is not part of the chain)"
        if await self._verifies_elsewhere(bad):
            return "reordered"
        return "edited (mac mismatch)"

    async def verify(self) -> VerifyResult:
        """Walk the chain from seq 1; the first bad record, if any, and how it is bad."""
        expected, prev = 1, AUDIT_GENESIS_MAC
        while True:
            chunk = await self._store.audit_records(expected - 1, _VERIFY_CHUNK)
            for row in chunk:
                broken = await self._check_row(expected, prev, row)
                if broken is not None:
                    return VerifyResult(expected - 1, broken)
                prev = row.mac
                expected += 1
            if len(chunk) == _VERIFY_CHUNK:
                continue
            last = expected - 1
            # The sealed head says where the chain ends. It is read after the rows, so a
            # record appended meanwhile shows as a head past them: walk on to it.
            head = await self._store.audit_head()
            if head is not None and head.seq > last and await self._store.audit_records(last, 1):
                continue
            return VerifyResult(last, self._check_end(head, last, prev))

    async def _check_row(self, expected: int, prev: bytes, row: AuditRow) -> ChainBreak | None:
        if row.seq != expected:
            return ChainBreak(expected, "missing (deleted)")
        if self._verifies(prev, row, row.seq):
            return None
        head = await self._store.audit_head()
        if head is not None and row.seq > head.seq:
            # The head is sealed in every append's own transaction.
            return ChainBreak(row.seq, "inserted (after the sealed head)")
        return ChainBreak(row.seq, await self._classify(prev, row))

    def _check_end(self, head: AuditHead | None, last: int, last_mac: bytes) -> ChainBreak | None:
        if head is None:
            # The genesis head is written with the audit key: no head is a cut, not empty.
            return ChainBreak(last + 1 if last == 0 else last, "head missing (deleted)")
        if head.seq > last:
            return ChainBreak(last + 1, "missing (deleted)")
        if head.seq < last:
            return ChainBreak(head.seq + 1, "inserted (after the sealed head)")
        if not self._head_ok(head, last_mac):
            return ChainBreak(last, "head mac mismatch (edited)")
        return None

    def _head_ok(self, head: AuditHead, last_mac: bytes) -> bool:
        return head_verifies(head, last_mac, self.seal)

    async def check_witness(
        self,
        heads: Sequence[AuditHead],
        expect_seq: int | None = None,
        records: Sequence[tuple[int, bytes]] = (),
    ) -> ChainBreak | None:
        """Against what was published outside the database: heads (seq, MAC), exported
        records (seq, MAC) and a seq the operator knows was reached. The first record at
        or below one of them that is gone or was rewritten; None when all hold. Catches
        a chain whose rows and head were rewritten consistently (with the audit key)."""
        if expect_seq is not None:
            newest = await self._store.audit_head()
            have = 0 if newest is None else newest.seq
            if have < expect_seq:
                return ChainBreak(have + 1, f"missing (the chain ends before seq {expect_seq})")
        checks = [(h.seq, h) for h in heads] + [(seq, mac) for seq, mac in records]
        for seq, want in sorted(checks, key=lambda c: c[0]):
            found = await self._store.audit_records(seq - 1, 1) if seq > 0 else []
            if seq > 0 and (not found or found[0].seq != seq):
                return ChainBreak(seq, "missing (at or below a published head)")
            mac = found[0].mac if found else AUDIT_GENESIS_MAC
            ok = (
                head_verifies(want, mac, self.seal)
                if isinstance(want, AuditHead)
                else hmac.compare_digest(want, mac)
            )
            if not ok:
                return ChainBreak(seq, "rewritten (does not match a published head)")
        return None
