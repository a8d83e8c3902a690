"""Retention: per tenant and data kind, a maximum age after which values are purged.

Policies live in the store, so every server's retention job (and ``vaultctl retention
report``) sees a change at its next run, with no restart. Held subjects' values are
kept (legal hold). Each purge that removed values is audited with its counts.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from vault import metrics
from vault.audit.base import ACTION_RETENTION_PURGE, AuditEvent, AuditSink
from vault.clock import Clock
from vault.domain.model import DataKind
from vault.storage.base import RetentionStats, RetentionStore, Store

__all__ = [
    "RETENTION_CALLER",
    "Purged",
    "parse_kind",
    "parse_max_age",
    "purge_retained",
    "retention_stats",
]

log = logging.getLogger(__name__)

# Who the trail names for the job's purges.
RETENTION_CALLER = "vault:retention"
_BATCH = 1000
_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}
_AGE = re.compile(r"([0-9]+(?:\.[0-9]+)?)([smhdw]?)")
# CVCs are never stored: their own TTL (at most an hour) is their retention.
_NOT_RETAINED = frozenset({DataKind.UNSPECIFIED, DataKind.CVC})


@dataclass(frozen=True, slots=True)
class Purged:
    tenant: str
    kind: DataKind
    count: int


def parse_max_age(text: str) -> float:
    """``400d``, ``12h``, ``90m``, ``3600s`` or ``3600`` (seconds) → seconds; ValueError."""
    match = _AGE.fullmatch(text.strip().lower())
    seconds = float(match.group(1)) * _UNITS[match.group(2)] if match else 0.0
    if seconds <= 0:
        raise ValueError("a maximum age is a positive number with s, m, h, d or w, e.g. 400d")
    return seconds


def parse_kind(text: str) -> DataKind:
    """``PAN`` or ``DATA_KIND_PAN`` → DataKind (not CVC, which is never stored); ValueError."""
    name = text.strip().upper().removeprefix("DATA_KIND_")
    kinds = {k.name: k for k in DataKind if k not in _NOT_RETAINED}
    if name not in kinds:
        raise ValueError("the kind must be one of " + ",".join(sorted(kinds)))
    return kinds[name]


async def purge_retained(
    store: Store, clock: Clock, audit: AuditSink | None, *, batch: int = _BATCH
) -> list[Purged]:
    """Purge every policy's values older than its maximum age (held subjects excepted),
    in transactions of ``batch`` rows; one audit record per tenant and kind purged."""
    done = []
    for policy in await store.retention_policies():
        try:
            kind = DataKind(policy.kind)
        except ValueError:
            continue  # a kind this vault does not know (a newer vault set it)
        if kind in _NOT_RETAINED:
            continue
        now = clock.now()
        created_before = now - policy.max_age
        total = await store.purge_retained(policy.tenant, policy.kind, created_before, now, batch)
        if not total:
            continue
        metrics.TOKENS_RETENTION_PURGED.labels(kind.name).inc(total)
        done.append(Purged(policy.tenant, kind, total))
        if audit is not None:
            event = AuditEvent(
                clock.now(),
                RETENTION_CALLER,
                policy.tenant,
                ACTION_RETENTION_PURGE,
                detail={
                    "kind": kind.name,
                    "purged": str(total),
                    "max_age_seconds": f"{policy.max_age:g}",
                },
            )
            try:
                await audit.record([event])
            except Exception as exc:  # noqa: BLE001 - the purge is done; the store counts it
                log.error("audit of a retention purge failed: %s", type(exc).__name__)
    return done


async def retention_stats(store: RetentionStore, now: float) -> list[RetentionStats]:
    """Per policy (and per counter a cleared policy left): rows due, rows held, rows
    purged so far, ordered by tenant and kind. A policy's rows are due once older than
    its maximum age at ``now``."""
    purges = {(p.tenant, p.kind): p for p in await store.retention_purges()}
    out: dict[tuple[str, int], RetentionStats] = {}
    for policy in await store.retention_policies():
        counts = await store.retention_counts(policy.tenant, policy.kind, now - policy.max_age)
        done = purges.get((policy.tenant, policy.kind))
        out[(policy.tenant, policy.kind)] = RetentionStats(
            policy.tenant,
            policy.kind,
            counts.due,
            counts.held,
            done.purged if done else 0,
            done.last_purge_at if done else None,
        )
    for key, done in purges.items():
        out.setdefault(
            key, RetentionStats(done.tenant, done.kind, 0, 0, done.purged, done.last_purge_at)
        )
    return [out[k] for k in sorted(out)]
