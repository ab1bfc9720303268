"""JSON log lines on stdout: one event per line, with the service name and the current request id."""

from __future__ import annotations

import contextvars
import logging
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
        return orjson.dumps(line, default=str).decode()


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
    # Our access log replaces uvicorn's (it carries the request id and latency).
    logging.getLogger("uvicorn.access").disabled = True


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name)
