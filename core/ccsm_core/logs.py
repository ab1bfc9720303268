"""JSON log lines on stdout: one event per line, with the service name and the current request id.

No token ever reaches a log: query strings are never logged (`redact_query`: the desktop could put its JWT in
`/ws/desktop?token=...`), and as a last line of defence anything shaped like a JWT in a line is replaced.
"""

from __future__ import annotations

import contextvars
import logging
import re
import sys
import time
from typing import Any

import orjson

# The one underscore key a line may carry: a CloudWatch Embedded Metric Format document (ccsm_core.metrics).
EMF_ROOT = "_aws"
request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

# Attributes every LogRecord has; anything else passed through `extra=` becomes a field of the line.
_RESERVED = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",  # uvicorn's ANSI variant of msg
}


# A JWS compact serialisation (RFC 7515 §7.1) of a JSON header: base64url("{"...") always starts with "eyJ".
_JWT_RE = re.compile(rb"eyJ[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*")
REDACTED = "<redacted>"
# websockets' own protocol log: one `info` line per connection and, at debug, every handshake header (the
# Authorization header carries a token) and frame. Only its warnings and errors may reach the log.
WEBSOCKETS_LOG = "ccsm.websockets"


def redact_query(target: str) -> str:
    """A request target as it may be logged: the path, and `?<redacted>` in place of any query."""
    path, sep, _ = target.partition("?")
    return f"{path}?{REDACTED}" if sep else path


def scrub_tokens(line: bytes) -> bytes:
    """Replace anything shaped like a JWT (cheap when there is none: one substring test)."""
    if b"eyJ" not in line:
        return line
    return _JWT_RE.sub(REDACTED.encode(), line)


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = request_id_var.get()
        if rid is not None:
            line["requestId"] = rid
        for key, value in record.__dict__.items():
            if key not in _RESERVED and (not key.startswith("_") or key == EMF_ROOT):
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return scrub_tokens(orjson.dumps(line, default=str)).decode()


def configure_logging(service: str, level: str = "info") -> None:
    """Route the root logger (and uvicorn's) to one JSON handler on stdout."""
    # The logging HOWTO's "Optimization" section: skip what a JSON line never shows (the caller's file and line,
    # thread, process and multiprocessing names); the stack walk alone is several microseconds per record.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers[:] = []
        lg.propagate = True
    # An explicit level (not NOTSET) makes uvicorn skip its per-connection TRACE lines without formatting them.
    logging.getLogger("uvicorn.error").setLevel(level.upper())
    logging.getLogger(WEBSOCKETS_LOG).setLevel(logging.WARNING)
    # Our access log replaces uvicorn's (it carries the request id and latency).
    logging.getLogger("uvicorn.access").disabled = True


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name)
