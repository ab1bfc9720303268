"""The one error table: every error body is `{"error": "..."}` (contract-core §1.2).

Handlers raise `ApiError(status, message)` with the documented message; everything else that escapes a handler
is classified here, so no driver message, stack trace or HTML page ever reaches a client.
"""

from __future__ import annotations

import asyncio

import orjson
import pymysql
from starlette.exceptions import HTTPException
from starlette.responses import Response

# Default messages per status, used when a status is raised without a message of its own.
MESSAGES: dict[int, str] = {
    400: "Bad request",
    401: "Invalid or expired token",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    408: "Request timeout",
    409: "Conflict",
    411: "Length required",
    413: "Request body too large",
    414: "URI too long",
    415: "Unsupported media type",
    429: "Too many requests",
    431: "Request header fields too large",
    500: "Internal server error",  # contract-core §1.2: the same string everywhere
    501: "Not implemented",
    502: "Bad gateway",
    503: "Service unavailable",  # fix 1: a database outage
    504: "Gateway timeout",
    505: "HTTP version not supported",
}


class ApiError(Exception):
    """An expected failure with a status and the client-facing message."""

    def __init__(self, status: int, message: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message or MESSAGES.get(status, "Error"))
        self.status = status
        self.message = message or MESSAGES.get(status, "Error")
        self.headers = headers or {}


class ServiceUnavailable(ApiError):
    def __init__(self) -> None:
        super().__init__(503)


# MySQL client errors meaning "the database is not reachable" rather than "this query is wrong":
# CR_CONNECTION_ERROR 2002, CR_CONN_HOST_ERROR 2003, CR_SERVER_GONE_ERROR 2006, CR_SERVER_LOST 2013,
# CR_SERVER_LOST_EXTENDED 2055 (MySQL client error reference), plus ER_CON_COUNT_ERROR 1040 (too many connections)
# and ER_SERVER_SHUTDOWN 1053.
DB_UNAVAILABLE_CODES = frozenset({1040, 1053, 2002, 2003, 2006, 2013, 2055})


def is_db_unavailable(exc: BaseException) -> bool:
    if isinstance(exc, pymysql.err.OperationalError | pymysql.err.InterfaceError):
        code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
        return code is None or code in DB_UNAVAILABLE_CODES or isinstance(exc, pymysql.err.InterfaceError)
    return isinstance(exc, ConnectionError | asyncio.TimeoutError)


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    body = orjson.dumps({"error": message})
    return Response(body, status_code=status, headers=headers, media_type="application/json")


def classify(exc: BaseException) -> tuple[int, str, dict[str, str]]:
    """Map any exception that escaped a handler to (status, message, headers)."""
    if isinstance(exc, ApiError):
        return exc.status, exc.message, exc.headers
    if isinstance(exc, HTTPException):
        headers = dict(exc.headers or {})
        return exc.status_code, MESSAGES.get(exc.status_code, str(exc.detail)), headers
    if is_db_unavailable(exc):
        return 503, MESSAGES[503], {}
    return 500, MESSAGES[500], {}
