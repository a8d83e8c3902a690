"""Answer filtering: card numbers at a route's configured JSON paths are tokenized
before the caller sees the processor's answer (some processors echo the PAN back)."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from vault.auth.policy import SCOPE_TOKENIZE, Caller
from vault.domain.kinds import normalize
from vault.domain.model import DataKind
from vault.domain.tokenize import Tokenize
from vault.domain.validation import TokenizeItem
from vault.errors import InvalidArgumentError, UnavailableError

__all__ = ["AnswerFilter", "parse_path"]

_MAX_DEPTH = 16
_MAX_SITES = 100
# A place in the parsed answer: the container and the key (or index) of a PAN.
_Site = tuple[Any, Any]


def parse_path(path: str) -> tuple[str, ...]:
    """``card.number``, ``$.payment_method.card.number`` or ``items.*.pan``: dot-separated
    object keys, ``*`` for every element (or value) at that level. ValueError if bad."""
    parts = tuple(path.removeprefix("$.").split("."))
    if not path or len(parts) > _MAX_DEPTH or any(not p for p in parts):
        raise ValueError("bad JSON path")
    return parts


def _is_pan(value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, str | int):
        return False
    try:
        normalize(DataKind.PAN, str(value), "")  # the PAN rule, in one place
    except InvalidArgumentError:
        return False
    return True


def _children(node: Any, part: str) -> list[_Site]:
    if part == "*":
        if isinstance(node, list):
            return [(node, i) for i in range(len(node))]
        if isinstance(node, dict):
            return [(node, k) for k in node]
        return []
    if isinstance(node, dict) and part in node:
        return [(node, part)]
    return []


def pan_sites(document: Any, path: tuple[str, ...]) -> list[_Site]:
    """Where the path reaches a PAN-shaped value (a Luhn-valid 12-19 digit run)."""
    level: list[_Site] = [({"": document}, "")]
    for part in path:
        level = [child for parent, key in level for child in _children(parent[key], part)]
    return [(parent, key) for parent, key in level if _is_pan(parent[key])]


class AnswerFilter:
    """Tokenizes the PANs a route's paths find in a JSON answer, in the caller's tenant."""

    def __init__(self, tokenize: Tokenize) -> None:
        self._tokenize = tokenize

    def __repr__(self) -> str:
        return "AnswerFilter()"

    async def filter(self, caller: Caller, paths: tuple[str, ...], body: bytes) -> bytes:
        """The body with those PANs replaced by tokens; unchanged if it holds none. An
        answer that is not JSON cannot be checked and is refused (fail closed)."""
        if not paths or not body.strip():
            return body
        try:
            document = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise UnavailableError(
                "the processor's answer is not JSON and the route filters it",
                reason="PROCESSOR_ANSWER_UNFILTERABLE",
            ) from None
        sites = [site for path in paths for site in pan_sites(document, parse_path(path))]
        sites = list({(id(p), k): (p, k) for p, k in sites}.values())  # paths may overlap
        if not sites:
            return body
        if len(sites) > _MAX_SITES:
            raise UnavailableError(
                "the processor's answer holds too many card numbers to filter",
                reason="PROCESSOR_ANSWER_UNFILTERABLE",
            )
        # Done for the route, on the caller's behalf: a forward-only caller tokenizes too.
        acting = replace(caller, scopes=caller.scopes | {SCOPE_TOKENIZE})
        items = [TokenizeItem(DataKind.PAN, str(parent[key])) for parent, key in sites]
        tokens = await self._tokenize.tokenize(acting, items, batch=True)
        for (parent, key), made in zip(sites, tokens, strict=True):
            parent[key] = made.token
        return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
