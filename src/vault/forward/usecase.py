"""Forward: the caller names a route and sends a body template; the vault reveals the
tokens inside the process, substitutes them, sends the request to the route's processor
and answers with the processor's status, the route's allowed headers and the body.

Checked before anything is revealed: the ``forward`` scope, the purpose, the route (it
exists, the caller may use it), the headers (the route's allowed ones and content-type
only) and the body. The reveal rate, the caller's kinds and tenant then apply as for
Detokenize, and a forwarded CVC spends its reveal (given back only if no byte of the
request left the process). ONE audit record per forward names the route, the tokens,
the purpose and the processor's status (or why it failed). A call whose record cannot be
written answers UNAVAILABLE, without the processor's answer.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from prometheus_client import Counter

from vault.audit.base import ACTION_FORWARD, OUTCOME_OK, AuditEvent
from vault.auth.policy import SCOPE_FORWARD, Caller
from vault.auth.policy import require as require_scope
from vault.clock import Clock
from vault.domain.auditing import NO_CONTEXT, UseCaseAudit
from vault.domain.model import Address, RequestContext
from vault.domain.results import Revealed
from vault.domain.reveal import Reveal
from vault.domain.validation import Validator
from vault.errors import (
    FailedPreconditionError,
    FieldViolation,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    VaultError,
)
from vault.forward.base import ProcessorAnswer, ProcessorClient, Route, request_sent
from vault.forward.filtering import AnswerFilter
from vault.forward.table import RouteTable
from vault.forward.template import body_format, render, tokens_in

__all__ = ["FORWARDS", "Forward", "ForwardResult"]

log = logging.getLogger(__name__)

_CONTENT_TYPE = "content-type"
# Framing headers of the answer: the vault has already decoded and bounded the body.
_NEVER_RETURNED = frozenset(
    {"content-length", "content-encoding", "transfer-encoding", "connection", "keep-alive"}
)
_MAX_HEADERS = 32
# Forwards by route and outcome: the processor's status, or the vault's reason code.
FORWARDS = Counter(
    "vault_forwards", "Forwards to processors, by route and outcome", ["route", "outcome"]
)
_MAX_HEADER_CHARS = 8192


@dataclass(frozen=True, slots=True)
class ForwardResult:
    status: int  # the processor's HTTP status
    headers: dict[str, str]  # the route's allowed answer headers (and content-type)
    body: bytes

    def __repr__(self) -> str:
        return f"ForwardResult(status={self.status})"


def _request_headers(route: Route, headers: Mapping[str, str]) -> dict[str, str]:
    """The caller's headers, lower-cased; INVALID_ARGUMENT for one the route does not
    allow (a header name is configuration, never a value: it may be named)."""
    out: dict[str, str] = {}
    violations = []
    if len(headers) > _MAX_HEADERS:
        violations.append(FieldViolation("headers", f"at most {_MAX_HEADERS} headers"))
    for name, value in headers.items():
        lower = name.strip().lower()
        if lower != _CONTENT_TYPE and lower not in route.allow_headers:
            violations.append(
                FieldViolation(f"headers[{lower[:64]}]", "is not allowed on this route")
            )
        elif len(value) > _MAX_HEADER_CHARS or any(c in value for c in "\r\n\x00"):
            violations.append(FieldViolation(f"headers[{lower}]", "is not a valid value"))
        else:
            out[lower] = value
    if violations:
        raise InvalidArgumentError(violations, reason="HEADER_NOT_ALLOWED")
    return out


def _texts(revealed: Sequence[Revealed]) -> dict[str, str]:
    values = {}
    for i, r in enumerate(revealed):
        if isinstance(r.value, Address):
            raise InvalidArgumentError(
                FieldViolation(f"body.tokens[{i}]", "an address token cannot stand in a body"),
            )
        values[r.token] = r.value
    return values


class Forward:
    """The Forward use case."""

    def __init__(
        self,
        routes: RouteTable,
        client: ProcessorClient,
        reveal: Reveal,
        answers: AnswerFilter,
        validator: Validator,
        audit: UseCaseAudit,
        clock: Clock,
    ) -> None:
        self._routes = routes
        self._client = client
        self._reveal = reveal
        self._answers = answers
        self._validator = validator
        self._audit = audit
        self._clock = clock

    def __repr__(self) -> str:
        return "Forward()"

    async def close(self) -> None:
        """Close the processor connections (on server stop)."""
        await self._client.close()

    async def forward(
        self,
        caller: Caller,
        route_name: str,
        headers: Mapping[str, str],
        body: bytes,
        purpose: str,
        *,
        request: RequestContext | None = None,
    ) -> ForwardResult:
        ctx = request or NO_CONTEXT
        tokens: list[str] = []
        detail = {"route": route_name[:64]}
        try:
            require_scope(caller, SCOPE_FORWARD)
            self._validator.check_purpose(purpose)
            route = await self._route(caller, route_name)
            sent_headers = _request_headers(route, headers)
            tokens = tokens_in(body)
            if tokens:
                body_format(sent_headers.get(_CONTENT_TYPE))
        except VaultError as exc:
            await self._audit.refusal(caller, ACTION_FORWARD, tokens, purpose, ctx, exc, detail)
            raise
        try:
            answer, kinds = await self._exchange(caller, route, sent_headers, body, tokens)
            result = await self._answer(caller, route, answer)
        except VaultError as exc:
            FORWARDS.labels(route.name, exc.reason).inc()
            await self._audit.refusal(caller, ACTION_FORWARD, tokens, purpose, ctx, exc, detail)
            raise
        detail |= {"status": str(result.status), "kinds": ",".join(kinds)}
        event = AuditEvent(
            self._clock.now(),
            caller.name,
            caller.tenant,
            ACTION_FORWARD,
            tuple(tokens),
            purpose,
            OUTCOME_OK,
            "",
            ctx.request_id,
            ctx.peer,
            detail,
        )
        await self._audit.done([event])
        FORWARDS.labels(route.name, str(result.status)).inc()
        return result

    async def _route(self, caller: Caller, name: str) -> Route:
        route = await self._routes.route(name)
        if route is None:
            raise NotFoundError("no route with that name", reason="ROUTE_NOT_FOUND")
        if not self._routes.allowed(caller.name, name):
            raise PermissionDeniedError(
                "the caller may not forward on this route", reason="ROUTE_NOT_ALLOWED"
            )
        return route

    async def _exchange(
        self, caller: Caller, route: Route, headers: dict[str, str], body: bytes, tokens: list[str]
    ) -> tuple[ProcessorAnswer, list[str]]:
        """Reveal, substitute, send: the values exist only inside this call. Returns the
        answer and the kinds forwarded."""
        if not tokens:
            return await self._client.send(route, headers, body), []
        fmt = body_format(headers.get(_CONTENT_TYPE))
        try:
            revealed, held = await self._reveal.open_for_use(caller, tokens)
        except InvalidArgumentError as exc:
            raise exc.prefixed("body") from None
        kinds = sorted({r.kind.name for r in revealed})
        try:
            outgoing = render(body, _texts(revealed), fmt)
            del revealed[:]
            answer = await self._client.send(route, headers, outgoing)
        except BaseException as exc:
            if not request_sent(exc):
                held.give_back()
            raise
        return answer, kinds

    async def _answer(self, caller: Caller, route: Route, answer: ProcessorAnswer) -> ForwardResult:
        if 300 <= answer.status < 400:  # noqa: PLR2004 - the HTTP redirect range
            # Never followed: the route's URL is the only place a value may go.
            raise FailedPreconditionError(
                "the processor answered with a redirect, which the vault does not follow",
                reason="PROCESSOR_REDIRECT",
            )
        allowed = route.allow_headers | {_CONTENT_TYPE}
        headers = {
            k: v for k, v in answer.headers.items() if k in allowed and k not in _NEVER_RETURNED
        }
        body = await self._answers.filter(caller, route.tokenize_paths, answer.body)
        return ForwardResult(answer.status, headers, body)
