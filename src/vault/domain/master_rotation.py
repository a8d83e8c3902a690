"""Master-key (KEK) rotation: every wrapped key re-wrapped under a new master key.

Data keys, fingerprint keys and service keys (the audit key, and whatever else lives
among the service keys) are unwrapped with the KEK their row names and wrapped under
the new one; records are untouched (they are under the data keys, which do not
change). Each row is replaced by compare-and-set and records the new kek_id, so a run
killed at any point leaves every row readable under one of the two keys, and running
it again moves the rest. Passes repeat until no row is under another KEK: a server
still on the old master key may add a fingerprint key meanwhile.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from vault.crypto.base import KekProvider
from vault.crypto.kekring import KekRing
from vault.crypto.keyring import dek_label, fingerprint_label
from vault.errors import FailedPreconditionError, InternalError
from vault.storage.base import Store, WrappedKeyKind, WrappedKeyRow

__all__ = ["MasterProgress", "MasterRotation", "rotate_master", "wrap_label"]

_MAX_PASSES = 10


@dataclass(frozen=True, slots=True)
class MasterProgress:
    moved: int  # rows re-wrapped by this run so far
    remaining: int  # rows of this pass still under another KEK


@dataclass(frozen=True, slots=True)
class MasterRotation:
    moved: int  # rows this run re-wrapped
    total: int  # wrapped keys in the store, all under the new KEK now
    old_kek_ids: tuple[str, ...]  # the KEKs rows were under before this run


def wrap_label(row: WrappedKeyRow) -> bytes:
    """The label a key was wrapped under (see keyring and the audit trail)."""
    if row.kind is WrappedKeyKind.DATA_KEY:
        return dek_label(int(row.name))
    if row.kind is WrappedKeyKind.FINGERPRINT_KEY:
        return fingerprint_label(row.name)
    return row.name.encode()


async def rotate_master(
    store: Store,
    current: KekRing,
    new: KekProvider,
    progress: Callable[[MasterProgress], None] | None = None,
) -> MasterRotation:
    moved = 0
    old_ids: set[str] = set()
    for _ in range(_MAX_PASSES):
        rows = await store.wrapped_keys()
        todo = [r for r in rows if r.kek_id != new.kek_id]
        if not todo:
            return MasterRotation(moved, len(rows), tuple(sorted(old_ids)))
        for done, row in enumerate(todo, 1):
            old_ids.add(row.kek_id)
            label = wrap_label(row)
            key = current.unwrap_with(row.kek_id, row.wrapped_key, label)
            wrapped = new.wrap(key, label)
            # Proven before it replaces the old one: a row is never left unreadable.
            if new.unwrap(wrapped, label) != key:
                raise InternalError("a re-wrapped key did not unwrap")
            if await store.replace_wrapped_key(
                row.kind, row.name, row.wrapped_key, wrapped, new.kek_id
            ):
                moved += 1
            if progress is not None and (done % 100 == 0 or done == len(todo)):
                progress(MasterProgress(moved, len(todo) - done))
    raise FailedPreconditionError(
        "keys kept changing under the old master key; stop the servers still on it and run "
        "rotate-master again",
        reason="ROTATE_MASTER_INCOMPLETE",
    )
