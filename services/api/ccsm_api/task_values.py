"""Task-data values (project defaults and per-segment values), user scope and instants shared by the projects,
time-tracking and desktop modules (contract-work §2 P4 step 5, §4 D4/D17, §1.2).

Time-zone model (contract-work §1.6, I-18). The services run in UTC and every pooled session uses
`time_zone = '+00:00'`, so the old backend's "server-local wall time" *is* UTC wall time:
- desktop rows (D15/D16/D17): `start_time`/`end_time` are the event instant in UTC (`YYYY-MM-DD HH:MM:SS`,
  milliseconds dropped as before) and `date` is the instant's UTC calendar date;
- web rows (T3/T4): `date` and the `HH:MM` values are stored exactly as the browser sends them;
- on the way out every DATETIME is written as `...sssZ` and every DATE as UTC midnight (`codec.dumps`).
This is byte-for-byte what the Node backend stored and returned when it ran in UTC (the deployment default). An
instant with an offset (`2026-02-05T09:00:00+01:00`) is converted to UTC first, as `new Date()` did; a naive ISO
string is read as UTC (the server's local time). Anything `new Date()` could not parse is a 400 (I-1, I-6).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
import pymysql

from ccsm_core.codec import DATETIME_YEARS, instant_from_json, utc_wall_time
from ccsm_core.errors import ApiError
from ccsm_core.guard import Principal
from ccsm_core.params import js_number, js_trim, normalize_string, positive_int

# normalizeValueType -> the project_task_data column (P2/P4/D3/D4).
TASK_DATA_COLUMNS: dict[str, str] = {
    "int": "value_int",
    "integer": "value_int",
    "decimal": "value_decimal",
    "varchar": "value_varchar",
    "text": "value_text",
    "bool": "value_bool",
    "boolean": "value_bool",
    "date": "value_date",
    "datetime": "value_datetime",
    "customer_id": "value_customer_id",
    "json": "value_json",
}
VALUE_COLUMNS = (
    "value_int",
    "value_decimal",
    "value_varchar",
    "value_text",
    "value_bool",
    "value_date",
    "value_datetime",
    "value_customer_id",
    "value_json",
)
# users_time_tracking_data has no value_customer_id: customer ids go into value_int (D17, D13).
TRACKING_DATA_COLUMNS: dict[str, str] = {**TASK_DATA_COLUMNS, "customer_id": "value_int"}


def normalize_type(value: Any) -> str:
    if value is None or value is False or value == "" or value == 0:
        return ""
    return normalize_string(value).lower()


def task_data_column(value_type: Any) -> str | None:
    return TASK_DATA_COLUMNS.get(normalize_type(value_type))


def _date_text(raw: str) -> str | None:
    text = raw[:10]
    try:
        day = dt.date.fromisoformat(text)
    except ValueError:
        return None
    return day.isoformat() if day.year in DATETIME_YEARS else None


def _datetime_text(raw: str) -> str | None:
    # `...Z` as P2/D3 return it is the UTC wall time (fix for I-13); so is an instant with any other offset.
    value = utc_wall_time(raw)
    return None if value is None else value.strftime("%Y-%m-%d %H:%M:%S")


def _json_text(value: Any) -> str:
    """`JSON.stringify(value)`. orjson refuses to nest deeper than 254 levels, which a request body may (up to
    1,024): that is the client's mistake, a 400, not an encoder error (a 500)."""
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        raise ApiError(400, "A task data value is nested too deeply") from None


def parse_value(value_type: str, value: Any) -> Any:
    """`parseTaskDataValue` (P4 step 5): the value for the typed column, or None. Values MySQL would reject (an
    unparseable date, a number out of range) are stored as NULL instead of failing the whole save with a 500."""
    kind = normalize_type(value_type)
    if value is None or value == "":
        return None
    if kind in ("int", "integer", "customer_id"):
        n = js_number(value)
        if not math.isfinite(n):
            return None
        if kind == "customer_id" and (n < 0 or n > 2**32 - 1):
            return None
        return int(n) if n.is_integer() and abs(n) < 2**63 else None
    if kind == "decimal":
        n = js_number(value)
        return n if math.isfinite(n) and abs(n) < 1e14 else None
    if kind in ("bool", "boolean"):
        if isinstance(value, bool):
            return 1 if value else 0
        if isinstance(value, int | float):
            return 1 if value else 0
        text = normalize_string(value).lower()
        return 1 if text in ("true", "1") else 0
    if kind == "json":
        return value if isinstance(value, str) else _json_text(value)
    if kind == "date":
        raw = normalize_string(value)
        return _date_text(raw) if raw else None
    if kind == "datetime":
        raw = normalize_string(value)
        return _datetime_text(raw) if raw else None
    if isinstance(value, dict):
        return _json_text(value)  # String({...}) was "[object Object]": keep the data instead
    return normalize_string(value) if not isinstance(value, str) else value


def required_flag(value: Any) -> int:
    """`is_required`: 1 for true, 1, "1" or "true" (any case)."""
    if value is True:
        return 1
    if isinstance(value, int | float) and not isinstance(value, bool):
        return 1 if value == 1 else 0
    if isinstance(value, str):
        return 1 if js_trim(value).lower() in ("1", "true") else 0
    return 0


# --- user scope (contract-work §1.2, fix 5, I-2) ----------------------------------------------------------------


def scoped_user_id(principal: Principal | None, requested: Any) -> int:
    """`resolveScopedUserId`: admins may name another user; everyone else is themselves. With auth off (local
    only) the requested id is used (I-2: the old backend answered 400 here). 0 means "missing"."""
    wanted = positive_int(requested) or 0
    if principal is None:
        return wanted
    if principal.is_admin:
        return wanted or principal.id
    return principal.id


def may_act_on(principal: Principal | None, owner_id: Any) -> bool:
    """The owner-or-admin rule (T4-T7, and the desktop facade under fix 5)."""
    return principal is None or principal.is_admin or owner_id == principal.id


# --- instants ---------------------------------------------------------------------------------------------------


def parse_instant(raw: Any, now: dt.datetime | None = None) -> dt.datetime:
    """`req.body.timestamp ? new Date(req.body.timestamp) : new Date()` as a naive UTC datetime; a value that
    `new Date()` turned into an Invalid Date (or that MySQL cannot store) is a 400 instead of a crash (I-1/I-6,
    issue 12 item 8)."""
    if raw is None or raw is False or raw == "" or raw == 0:
        return (now or dt.datetime.now(dt.UTC)).replace(tzinfo=None)
    value = instant_from_json(raw)
    if value is None:
        raise ApiError(400, "Invalid timestamp")
    return value


def mysql_datetime(value: dt.datetime) -> str:
    """`formatMySQLDatetime`: whole seconds, server-local (= UTC) wall time."""
    return value.strftime("%Y-%m-%d %H:%M:%S")


# A write the database refuses because of the values (unknown referenced id, out-of-range number, text too long
# for its column) is the client's mistake: a 400 rather than the old 500 (fix 1).
REFUSED_WRITES = (pymysql.err.IntegrityError, pymysql.err.DataError)


@asynccontextmanager
async def refused_as_400(message: str) -> AsyncIterator[None]:
    try:
        yield
    except REFUSED_WRITES:
        raise ApiError(400, message) from None
