"""Request-value rules shared by the users, customers, lookups and items resources.

They keep the old handlers' JavaScript semantics (contract-core §1.4) but turn what used to reach the SQL layer
as NaN, `[object Object]` or an oversized value (a 500 in the old backend) into a 400 (spec README, fix 1).
"""

from __future__ import annotations

import math
from collections.abc import Awaitable
from typing import Any

import pymysql

from ccsm_core.db import Row
from ccsm_core.errors import ApiError
from ccsm_core.params import js_number, normalize_string

# MySQL/MariaDB server error numbers (MariaDB error reference).
ER_DUP_ENTRY = 1062
ER_NO_REFERENCED_ROW = 1216
ER_ROW_IS_REFERENCED = 1217
ER_ROW_IS_REFERENCED_2 = 1451
ER_NO_REFERENCED_ROW_2 = 1452
ER_BAD_FIELD_ERROR = 1054
ER_NO_SUCH_TABLE = 1146
ER_BAD_TABLE_ERROR = 1051
# Values the column cannot hold: too long, out of range, wrong value for the column type, truncated.
DATA_ERRORS = frozenset({1264, 1265, 1292, 1366, 1406})

SqlNumber = int | float


def error_code(exc: BaseException) -> int | None:
    if isinstance(exc, pymysql.err.MySQLError) and exc.args and isinstance(exc.args[0], int):
        return int(exc.args[0])
    return None


def is_missing_table(exc: BaseException) -> bool:
    return error_code(exc) in (ER_NO_SUCH_TABLE, ER_BAD_TABLE_ERROR)


async def rows_or_empty(query: Awaitable[list[Row]]) -> list[Row]:
    """The rows, or [] when the table does not exist: the old list handlers answered an empty list for an
    optional table that a database lacks, and only for that error."""
    try:
        return await query
    except pymysql.err.MySQLError as exc:
        if not is_missing_table(exc):
            raise
        return []


def sql_number(n: float) -> SqlNumber:
    """A finite JS number as a bound SQL value: whole numbers as int (so they match INT ids exactly)."""
    if n.is_integer() and abs(n) < 2**63:
        return int(n)
    return n


def finite_id(value: Any, message: str) -> SqlNumber:
    """The users/customers `:id` rule: `Number.isFinite(Number(param))`, else 400 `message`. A finite value
    that is not a row id ("0", "-3", "1.5") simply matches nothing later (404), as before."""
    n = js_number(value)
    if not math.isfinite(n):
        raise ApiError(400, message)
    return sql_number(n)


def truthy_number(value: Any, message: str) -> SqlNumber:
    """The items `projectId` rule: `!Number(value)` is rejected (0, NaN, missing). Infinity, which the old
    backend passed on to SQL (a 500), is rejected with the same message."""
    n = js_number(value)
    if not n or math.isnan(n) or not math.isfinite(n):
        raise ApiError(400, message)
    return sql_number(n)


def optional_number(value: Any, name: str) -> SqlNumber | None:
    """`value ? Number(value) : null` (items `categoryId`/`userId`); NaN/Infinity are a 400, not a SQL error."""
    if not value:
        return None
    n = js_number(value)
    if not math.isfinite(n):
        raise ApiError(400, f"{name} must be a number")
    return sql_number(n)


def text(body: dict[str, Any], name: str) -> str:
    """`String(body[name] ?? '').trim()` for scalars; an object or array is a 400 instead of being stored as
    `[object Object]` or a comma list."""
    value = body.get(name)
    if isinstance(value, dict | list):
        raise ApiError(400, f"Field '{name}' has the wrong type")
    return normalize_string(value)


def data_error(exc: BaseException) -> ApiError | None:
    """A value the column cannot hold (too long, out of range): a 400 rather than the old 500."""
    if error_code(exc) in DATA_ERRORS:
        return ApiError(400, "A field value is too long or out of range")
    return None
