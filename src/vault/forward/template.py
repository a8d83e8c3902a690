"""The body template of a forward: ``{{token:T}}`` stands where the value of token T
goes. Values are escaped for the body's content type, so a value can never change the
body's structure: a JSON string escape, or form urlencoding."""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Mapping
from urllib.parse import quote_plus

from vault.errors import FieldViolation, InvalidArgumentError

__all__ = ["MAX_BODY_BYTES", "MAX_TOKENS", "BodyFormat", "body_format", "render", "tokens_in"]

MAX_BODY_BYTES = 256 * 1024
MAX_TOKENS = 32  # placeholders (distinct tokens) in one body
_PLACEHOLDER = re.compile(rb"\{\{token:([^{}\s]{1,128})\}\}")


class BodyFormat(enum.Enum):
    JSON = "json"
    FORM = "form"


def body_format(content_type: str | None) -> BodyFormat:
    """The escaping a content type needs; INVALID_ARGUMENT for one the vault cannot
    substitute into safely."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    ):
        return BodyFormat.JSON
    if media == "application/x-www-form-urlencoded":
        return BodyFormat.FORM
    raise InvalidArgumentError(
        FieldViolation(
            "headers",
            "content-type must be application/json or application/x-www-form-urlencoded "
            "when the body holds tokens",
        ),
        reason="UNSUPPORTED_CONTENT_TYPE",
    )


def tokens_in(body: bytes) -> list[str]:
    """The distinct tokens the body names, in order of first appearance."""
    if len(body) > MAX_BODY_BYTES:
        raise InvalidArgumentError(
            FieldViolation("body", f"must be at most {MAX_BODY_BYTES} bytes"),
            reason="BODY_TOO_LARGE",
        )
    found = list(dict.fromkeys(m.group(1) for m in _PLACEHOLDER.finditer(body)))
    if len(found) > MAX_TOKENS:
        raise InvalidArgumentError(
            FieldViolation("body", f"may name at most {MAX_TOKENS} tokens"),
            reason="TOO_MANY_TOKENS",
        )
    try:
        return [t.decode("ascii") for t in found]
    except UnicodeDecodeError:
        raise InvalidArgumentError(
            FieldViolation("body", "a {{token:…}} placeholder names no token"),
        ) from None


def _escaped(value: str, fmt: BodyFormat) -> bytes:
    if fmt is BodyFormat.JSON:
        # The inside of a JSON string literal: quotes, backslashes, controls escaped.
        return json.dumps(value, ensure_ascii=False)[1:-1].encode("utf-8")
    return quote_plus(value, safe="").encode("ascii")


def render(body: bytes, values: Mapping[str, str], fmt: BodyFormat) -> bytes:
    """The body with every placeholder replaced by its token's escaped value."""
    escaped = {token.encode("ascii"): _escaped(value, fmt) for token, value in values.items()}
    return _PLACEHOLDER.sub(lambda m: escaped[m.group(1)], body)
