"""Bidirectional item streams (TokenizeStream, DetokenizeStream): the unary call's
authentication, refusals, rate limits and audit, item by item, over one HTTP/2 stream.

- The credential is checked from the headers when the stream opens, and the stream's
  scope (``tokenize`` or ``detokenize``) with it: a refused caller gets the unary call's
  status for the whole stream (tallied and throttled the same way), and nothing of the
  body is decoded. Each item authenticates again (a cache hit, ~0.3 µs), so a key revoked
  or expired mid-stream ends the stream with UNAUTHENTICATED after the answers before it.
- Each item runs the unary use case in its own task, so the items in flight share
  group commits with each other and with other calls. Answers go out in request order,
  each with its response or its own ``google.rpc.Status``: a bad item never ends the
  stream.
- Flow control: at most ``STREAM_WINDOW`` items are in flight per stream. The next
  request is read only once an answer has been handed to grpc, and grpc's write waits
  for the HTTP/2 window, so a client that stops reading stops the server reading too
  (memory per stream is bounded by the window, not by what the client sends).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from vault import metrics
from vault.api.errors import grpc_code, to_grpc_status, to_status_message
from vault.api.rpc import (
    REFUSALS,
    Authenticated,
    Context,
    Decoder,
    authorization_of,
    cert_identity,
    check_throttle,
    check_transport,
    decode_request,
    refused,
    request_context,
)
from vault.auth.policy import Caller
from vault.auth.policy import require as require_scope
from vault.domain.model import RequestContext
from vault.errors import InternalError, VaultError

__all__ = ["STREAM_WINDOW", "ItemHandler", "stream"]

log = logging.getLogger(__name__)

# Items in flight per stream: enough to fill a group commit (records/commit at c=64 is a
# few dozen), small enough that a stream holds little memory (64 x 4 MiB at worst).
STREAM_WINDOW = 64

Req = TypeVar("Req")
Resp = TypeVar("Resp")
# (servicer, caller, request, stream's request context) -> the item's response
ItemHandler = Callable[[Any, Caller, Req, RequestContext], Awaitable[Resp]]
# (servicer, caller, requests, stream's request context) -> their responses, all or none
GroupHandler = Callable[[Any, Caller, list[Any], RequestContext], Awaitable[list[Any]]]
# (response=...) or (error=...) -> the stream's response message
Wrap = Callable[..., Any]

_INTERNAL = InternalError("internal error")


class _EndStream(Exception):  # noqa: N818 - a control-flow signal, not an error type
    """An item whose credential no longer holds: the stream ends after the answers
    before it."""

    def __init__(self, exc: VaultError) -> None:
        super().__init__(exc.reason)
        self.exc = exc


class _Stream:
    """One open stream: its caller's credential, context and counters."""

    __slots__ = ("authorization", "context", "identity", "method", "request", "servicer")

    def __init__(
        self,
        servicer: Authenticated,
        context: Context,
        method: str,
        authorization: str | None,
        identity: str | None,
    ) -> None:
        self.servicer = servicer
        self.context = context
        self.method = method
        self.authorization = authorization
        self.identity = identity
        self.request = request_context(context)

    async def caller(self) -> Caller:
        return await self.servicer.authenticator.authenticate(self.authorization, self.identity)

    async def refuse(self, exc: VaultError, caller: Caller | None) -> None:
        """Tally and throttle a refusal as ``rpc`` does."""
        metrics.RPC_CALLS.labels(self.method, grpc_code(exc).name).inc()
        if isinstance(exc, REFUSALS):
            metrics.AUTH_FAILURES.labels(exc.reason).inc()
            await refused(self.servicer, self.method, self.context, caller, exc, self.authorization)


def stream(
    method: str, scope: str, response_type: Wrap, group: GroupHandler | None = None
) -> Callable[[ItemHandler[Req, Resp]], Callable[..., Awaitable[None]]]:
    """Turn a one-item handler into a stream handler for ``method`` (the metric label),
    needing ``scope``; ``response_type`` wraps an item's response or error. With
    ``group`` (the batch use case, all or nothing), the items that arrive while a group
    runs go together as the next group; a group that fails is run again item by item,
    so each item still gets the answer its unary call would."""

    def decorate(fn: ItemHandler[Req, Resp]) -> Callable[..., Awaitable[None]]:
        @functools.wraps(fn)
        async def handler(
            self: Authenticated,
            requests: AsyncIterator[Any],
            context: Context,
            decode: Decoder | None = None,
        ) -> None:
            s = await _open(self, context, method, scope)
            item = functools.partial(_item, s, fn, decode, response_type)
            if group is None:
                await _pump(s, requests, item)
            else:
                await _pump(s, requests, _Grouper(s, group, item, decode, response_type))

        return handler

    return decorate


async def _open(servicer: Authenticated, context: Context, method: str, scope: str) -> _Stream:
    """Authenticate the stream from its headers and check its scope; abort if refused."""
    authorization = authorization_of(context)
    identity = None if authorization else cert_identity(context)
    s = _Stream(servicer, context, method, authorization, identity)
    caller: Caller | None = None
    try:
        check_transport(context)  # a credential over plaintext from another host
        door = servicer.authenticator
        if door.limiter.throttling:
            check_throttle(door, context, authorization, identity)
        caller = await s.caller()
        require_scope(caller, scope)
    except VaultError as exc:
        await s.refuse(exc, caller)
        await context.abort_with_status(to_grpc_status(exc))  # type: ignore[attr-defined]
        raise  # pragma: no cover - abort raises
    return s


async def _item(
    s: _Stream, fn: ItemHandler[Any, Any], decode: Decoder | None, wrap: Wrap, raw: Any
) -> Any:
    """One item's answer: its response, or its error as a google.rpc.Status."""
    start = time.perf_counter()
    caller: Caller | None = None
    try:
        try:
            caller = await s.caller()
        except VaultError as exc:
            raise _EndStream(exc) from None
        response = await fn(s.servicer, caller, decode_request(decode, raw), s.request)
    except VaultError as exc:
        await s.refuse(exc, caller)
        answer = wrap(error=to_status_message(exc))
    except Exception as exc:
        if isinstance(exc, _EndStream):
            raise
        log.error("internal error in %s: %s", s.method, type(exc).__name__)
        metrics.RPC_CALLS.labels(s.method, "INTERNAL").inc()
        answer = wrap(error=to_status_message(_INTERNAL))
    else:
        metrics.RPC_CALLS.labels(s.method, "OK").inc()
        answer = wrap(response=response)
    metrics.RPC_LATENCY.labels(s.method).observe(time.perf_counter() - start)
    return answer


class _Grouper:
    """Items of one stream in groups: at most one group runs at a time, and the items
    that arrive meanwhile form the next one (a group commit per stream)."""

    __slots__ = ("_decode", "_group", "_item", "_pending", "_running", "_s", "_wrap")

    def __init__(
        self,
        s: _Stream,
        group: GroupHandler,
        item: Callable[[Any], Awaitable[Any]],
        decode: Decoder | None,
        wrap: Wrap,
    ) -> None:
        self._s = s
        self._group = group
        self._item = item
        self._decode = decode
        self._wrap = wrap
        self._pending: list[tuple[Any, asyncio.Future[Any]]] = []
        self._running: asyncio.Task[None] | None = None

    def __call__(self, raw: Any) -> asyncio.Future[Any]:
        answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((raw, answer))
        if self._running is None:
            self._running = asyncio.ensure_future(self._drain())
        return answer

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                await self._run(batch)
        finally:
            self._running = None

    async def _run(self, batch: list[tuple[Any, asyncio.Future[Any]]]) -> None:
        s = self._s
        start = time.perf_counter()
        try:
            caller = await s.caller()
        except VaultError as exc:
            for _, answer in batch:
                _settle(answer, error=_EndStream(exc))
            return
        try:
            requests = [decode_request(self._decode, raw) for raw, _ in batch]
            responses = await self._group(s.servicer, caller, requests, s.request)
        except Exception:  # noqa: BLE001 - each item runs alone and gets its own answer
            await self._one_by_one(batch)
            return
        for (_, answer), response in zip(batch, responses, strict=True):
            _settle(answer, self._wrap(response=response))
        metrics.RPC_CALLS.labels(s.method, "OK").inc(len(batch))
        metrics.RPC_LATENCY.labels(s.method).observe(time.perf_counter() - start)

    async def _one_by_one(self, batch: list[tuple[Any, asyncio.Future[Any]]]) -> None:
        results = await asyncio.gather(
            *(self._item(raw) for raw, _ in batch), return_exceptions=True
        )
        for (_, answer), result in zip(batch, results, strict=True):
            if isinstance(result, BaseException):
                _settle(answer, error=result)
            else:
                _settle(answer, result)


def _settle(
    answer: asyncio.Future[Any], result: Any = None, error: BaseException | None = None
) -> None:
    """Answer an item, unless its stream has ended (the future was cancelled)."""
    if answer.done():
        return
    if error is not None:
        answer.set_exception(error)
    else:
        answer.set_result(result)


async def _pump(
    s: _Stream, requests: AsyncIterator[Any], item: Callable[[Any], Awaitable[Any]]
) -> None:
    """Run up to STREAM_WINDOW items at once (read by a reader task), answer in order."""
    inflight: asyncio.Queue[asyncio.Future[Any] | None] = asyncio.Queue()
    window = asyncio.Semaphore(STREAM_WINDOW)
    reader = asyncio.ensure_future(_read(requests, item, inflight, window))
    try:
        while (task := await inflight.get()) is not None:
            try:
                answer = await task
            except _EndStream as end:
                await s.refuse(end.exc, None)
                await s.context.abort_with_status(to_grpc_status(end.exc))  # type: ignore[attr-defined]
                raise  # pragma: no cover - abort raises
            # Waits for the HTTP/2 window: a client that stops reading stops the reads.
            await s.context.write(answer)
            window.release()
        await reader  # a failed read ends the stream with its error
    finally:
        reader.cancel()
        while not inflight.empty():
            left = inflight.get_nowait()
            if left is not None:
                left.cancel()


async def _read(
    requests: AsyncIterator[Any],
    item: Callable[[Any], Awaitable[Any]],
    inflight: asyncio.Queue[asyncio.Future[Any] | None],
    window: asyncio.Semaphore,
) -> None:
    """Start each request's item once the window has room; None marks the end."""
    try:
        async for raw in requests:
            await window.acquire()
            inflight.put_nowait(asyncio.ensure_future(item(raw)))
    finally:
        inflight.put_nowait(None)
