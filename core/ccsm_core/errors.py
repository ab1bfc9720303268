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


# Why the database cannot be used, by MySQL/MariaDB error number (MySQL server and client error references;
# MariaDB error codes). Each is a 503 `Service unavailable` for the request, whatever the statement was, and
# `/ready` names the kind (`db-<kind>`); the driver's text goes to the log only.
DB_UNAVAILABLE: dict[int, str] = {
    # the server refuses these credentials or this client (issue 16: 1045 used to answer login with a 500)
    1044: "access-denied",  # ER_DBACCESS_DENIED_ERROR: no access to the database
    1045: "access-denied",  # ER_ACCESS_DENIED_ERROR: wrong user or password
    1129: "access-denied",  # ER_HOST_IS_BLOCKED: too many connection errors from this host
    1130: "access-denied",  # ER_HOST_NOT_PRIVILEGED: this host may not connect
    1142: "access-denied",  # ER_TABLEACCESS_DENIED_ERROR: a grant is missing on a table
    1143: "access-denied",  # ER_COLUMNACCESS_DENIED_ERROR
    1227: "access-denied",  # ER_SPECIFIC_ACCESS_DENIED_ERROR
    1251: "access-denied",  # ER_NOT_SUPPORTED_AUTH_MODE: the account's authentication plugin
    1698: "access-denied",  # ER_ACCESS_DENIED_NO_PASSWORD_ERROR
    1820: "access-denied",  # ER_MUST_CHANGE_PASSWORD
    1862: "access-denied",  # ER_MUST_CHANGE_PASSWORD_LOGIN: the password expired
    # the configured database does not exist (DB_NAME, or a database dropped under the service)
    1049: "unknown-database",  # ER_BAD_DB_ERROR
    # connections refused for their number
    1040: "too-many-connections",  # ER_CON_COUNT_ERROR: max_connections
    1203: "too-many-connections",  # ER_TOO_MANY_USER_CONNECTIONS: max_user_connections
    1226: "too-many-connections",  # ER_USER_LIMIT_REACHED: an account resource limit
    # the server cannot be reached, or went away
    1053: "unreachable",  # ER_SERVER_SHUTDOWN
    1927: "unreachable",  # ER_CONNECTION_KILLED (MariaDB)
    2002: "unreachable",  # CR_CONNECTION_ERROR
    2003: "unreachable",  # CR_CONN_HOST_ERROR
    2005: "unreachable",  # CR_UNKNOWN_HOST
    2006: "unreachable",  # CR_SERVER_GONE_ERROR
    2013: "unreachable",  # CR_SERVER_LOST
    2026: "unreachable",  # CR_SSL_CONNECTION_ERROR
    2055: "unreachable",  # CR_SERVER_LOST_EXTENDED
}
DB_UNAVAILABLE_CODES = frozenset(DB_UNAVAILABLE)

# A statement that lost a lock race (MySQL server error reference): InnoDB has already rolled back the statement
# (1205) or the whole transaction (1213), so nothing of the request was written and the client may simply send it
# again. Not a fault of the request and not a broken connection: 503 with `Retry-After`, never a 500.
DB_CONTENTION: dict[int, str] = {
    1205: "lock-wait-timeout",  # ER_LOCK_WAIT_TIMEOUT: innodb_lock_wait_timeout passed
    1213: "deadlock",  # ER_LOCK_DEADLOCK: chosen as the deadlock's victim
}
CONTENTION_RETRY_AFTER_S = 1


def db_contention_kind(exc: BaseException) -> str | None:
    if isinstance(exc, pymysql.err.MySQLError) and exc.args and isinstance(exc.args[0], int):
        return DB_CONTENTION.get(exc.args[0])
    return None


def db_unavailable_kind(exc: BaseException) -> str | None:
    """What makes the database unusable (`access-denied`, `unknown-database`, `too-many-connections`,
    `unreachable`), or None when `exc` is not a database unavailability (a wrong query, a constraint)."""
    if isinstance(exc, pymysql.err.InterfaceError):
        return "unreachable"
    if isinstance(exc, pymysql.err.MySQLError):
        code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
        if code is None:
            return "unreachable" if isinstance(exc, pymysql.err.OperationalError) else None
        return DB_UNAVAILABLE.get(code)
    if isinstance(exc, ConnectionError | asyncio.TimeoutError):
        return "unreachable"
    return None


def is_db_unavailable(exc: BaseException) -> bool:
    return db_unavailable_kind(exc) is not None


def unavailability_kind(exc: BaseException) -> str:
    """The kind of database unavailability behind `exc`, following its causes (a `ServiceUnavailable` raised
    from the driver's error); `unreachable` when none is named."""
    seen: BaseException | None = exc
    for _ in range(10):  # a bounded walk: cause chains are short, and may loop
        if seen is None:
            break
        kind = db_unavailable_kind(seen)
        if kind is not None:
            return kind
        seen = seen.__cause__ or seen.__context__
    return "unreachable"


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
    if db_contention_kind(exc) is not None:
        return 503, MESSAGES[503], {"Retry-After": str(CONTENTION_RETRY_AFTER_S)}
    return 500, MESSAGES[500], {}
