"""The group-commit batcher both stores share: what a waiting write is, the queue drain,
and how every caller of a batch is answered once its one transaction has committed.

A store puts ops on a queue; a writer task drains every op waiting when it wakes (up to
a bound) into one batch, runs the batch in one transaction its own way (SQLite: one hop
to the writer thread; PostgreSQL: one pooled connection), then answers every caller:
with its result once the commit is durable, or, when the transaction failed, every
caller of the batch with UNAVAILABLE. Nothing is answered before the commit returns, so
nothing acknowledged can be lost; a stop marker (None) ends a writer after the ops
queued before it have been committed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from vault.errors import StoreUnavailableError
from vault.storage.base import AuditRow, AuditSeal, CommitObserver, InsertOutcome, TokenRecord
from vault.storage.sql.audit_chain import AuditChainBrokenError
from vault.storage.sql.tx import Tx

__all__ = [
    "AuditOp",
    "InsertOp",
    "ReadOp",
    "Waiting",
    "WriteOp",
    "answer_batch",
    "drain",
    "fail_batch",
    "fail_waiting",
    "queued_read",
    "read_weight",
]

log = logging.getLogger("vault.storage")

O = TypeVar("O")  # noqa: E741 - an op


@dataclass(slots=True)
class InsertOp:
    """One insert_tokens call waiting for its group commit."""

    records: Sequence[TokenRecord]
    now: float
    encryptions: Mapping[int, int]  # key version -> encryptions the call made
    future: asyncio.Future[list[InsertOutcome]]
    outcomes: list[InsertOutcome] = field(default_factory=list)

    def answer(self) -> None:
        self.future.set_result(self.outcomes)


def _audit_error(exc: BaseException) -> BaseException:
    """What an audit append's caller gets: a broken chain as such (its message holds no
    data), anything else as UNAVAILABLE (a driver's text can quote values)."""
    if isinstance(exc, AuditChainBrokenError):
        return exc
    return StoreUnavailableError("the store could not commit")


@dataclass(slots=True)
class AuditOp:
    """Audit records to chain on; every waiting one goes into the group's transaction."""

    rows: Sequence[AuditRow]
    seal: AuditSeal
    future: asyncio.Future[list[AuditRow]]
    stored: list[AuditRow] = field(default_factory=list)
    error: BaseException | None = None  # set when only the audit part failed

    def answer(self) -> None:
        if self.error is not None:
            log.error("audit append failed: %s", type(self.error).__name__)
            self.future.set_exception(_audit_error(self.error))
        else:
            self.future.set_result(self.stored)


@dataclass(slots=True)
class WriteOp:
    """Any other write, run in its own savepoint inside the group transaction (SQLite)."""

    tx: Callable[[], Tx[Any]]
    future: asyncio.Future[Any]
    result: Any = None
    error: BaseException | None = None  # the write's own refusal, for its caller only

    def answer(self) -> None:
        if self.error is not None:
            self.future.set_exception(self.error)
        else:
            self.future.set_result(self.result)


@dataclass(slots=True)
class ReadOp:
    """One get_tokens call waiting for the next batched read."""

    tokens: Sequence[str]
    future: asyncio.Future[list[TokenRecord | None]]


class Waiting(Protocol):
    """Anything with a caller waiting on a future."""

    @property
    def future(self) -> asyncio.Future[Any]: ...


class Answerable(Waiting, Protocol):
    def answer(self) -> None: ...


async def drain(
    queue: asyncio.Queue[O | None],
    handle: Callable[[list[O]], Awaitable[None]],
    limit: int,
    weight: Callable[[O], int] = lambda _: 1,
) -> None:
    """Until the stop marker: take every op waiting when woken (up to ``limit`` weight)
    and hand them to ``handle`` as one batch. Several tasks may drain one queue; each
    stops at the one marker it takes, after handling what it took before it."""
    while True:
        op = await queue.get()
        if op is None:
            return
        batch, size, stopping = [op], weight(op), False
        while size < limit and not queue.empty():
            nxt = queue.get_nowait()
            if nxt is None:
                stopping = True
                break
            batch.append(nxt)
            size += weight(nxt)
        await handle(batch)
        if stopping:
            return


def answer_batch(
    batch: Sequence[Answerable], inserted: int, on_commit: CommitObserver | None
) -> None:
    """The batch committed: tell the commit observer, then answer every caller."""
    if on_commit is not None and inserted:
        try:
            on_commit(inserted)
        except Exception as exc:  # noqa: BLE001 - a metrics hook must not stop commits
            log.warning("commit observer failed: %s", type(exc).__name__)
    for op in batch:
        if not op.future.done():
            op.answer()


def fail_batch(batch: Sequence[Waiting], exc: BaseException, what: str = "commit") -> None:
    """The batch's transaction (or read) failed: every waiting caller gets UNAVAILABLE
    (the error's type is logged, never its text: it can quote values)."""
    log.error("store %s failed: %s", what, type(exc).__name__)
    err: BaseException = StoreUnavailableError(
        f"the store could not {'be read' if what == 'read' else what}"
    )
    if isinstance(exc, AuditChainBrokenError):
        err = exc  # the trail counts and reports it (its message holds no data)
    for op in batch:
        if not op.future.done():
            op.future.set_exception(err)


def fail_waiting(queue: asyncio.Queue[Any]) -> None:
    """Ops still queued after the writers stopped: UNAVAILABLE (the store is closing)."""
    while not queue.empty():
        left = queue.get_nowait()
        if left is not None and not left.future.done():
            left.future.set_exception(StoreUnavailableError("the store is closing"))


async def queued_read(
    queue: asyncio.Queue[ReadOp | None], tokens: Sequence[str]
) -> list[TokenRecord | None]:
    """Wait for the store's next batched read to answer ``tokens`` (in their order)."""
    future: asyncio.Future[list[TokenRecord | None]] = asyncio.get_running_loop().create_future()
    queue.put_nowait(ReadOp(tokens, future))
    return await future


def read_weight(op: ReadOp) -> int:
    """What a read counts for in a batch's bound: its tokens."""
    return len(op.tokens)
