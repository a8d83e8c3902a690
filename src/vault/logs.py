"""Logging set-up: plain or JSON lines, with a last-line-of-defence scrubber.

Code never logs values; the scrubber still replaces any run of seven or more digits
(spaces and dashes allowed between them, as a PAN is often written) in every message,
so a mistake cannot put a card number into a log.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time

__all__ = ["ScrubFilter", "scrub", "setup_logging"]

_DIGIT_RUN = re.compile(r"\d(?:[ \-]?\d){6,}")


def scrub(text: str) -> str:
    return _DIGIT_RUN.sub("[redacted]", text)


class ScrubFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        record.msg = scrub(message)
        record.args = None
        if record.exc_info:
            # Tracebacks may quote arguments: keep only the exception type.
            exc_type = record.exc_info[0]
            record.msg += f" ({exc_type.__name__ if exc_type else 'error'})"
            record.exc_info = None
            record.exc_text = None
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(
            {
                "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                + f".{int(record.msecs):03d}Z",
                "level": record.levelname.lower(),
                "logger": record.name,
                "message": record.getMessage(),
            },
            ensure_ascii=False,
        )


def setup_logging(fmt: str = "plain", level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ScrubFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiosqlite logs every statement's parameters at DEBUG (ciphertexts, key hashes):
    # never below INFO, whatever the vault's own level.
    logging.getLogger("aiosqlite").setLevel(max(logging.INFO, root.level))
