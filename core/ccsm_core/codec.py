"""JSON in and out, with the old backend's value encodings (contract-core §1.5, contract-work §1.5).

- DATETIME/TIMESTAMP: the stored wall time is the app server's local time, and the server runs in UTC, so a
  naive value is read as UTC and written `YYYY-MM-DDTHH:MM:SS.mmmZ` (what `Date.toJSON()` gives).
- DATE: local midnight of that day, i.e. `YYYY-MM-DDT00:00:00.000Z`.
- DECIMAL: a string (mysql2's `decimalNumbers: false`), e.g. `"2.50"`.
- TIME: `HH:MM:SS` (mysql2 returns TIME columns as strings).

Instants sent by clients are read here, in one place (`utc_wall_time`, `instant_from_json`): an offset is applied
as `new Date()` did, and a value outside MySQL's DATETIME range is "not an instant" (None) rather than an
OverflowError from the conversion (issue 12 item 8: `9999-12-31T23:30:00-01:00` is year 10000 in UTC).
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from ccsm_core.errors import ApiError
from ccsm_core.params import js_trim

__all__ = [
    "DATETIME_YEARS",
    "dumps",
    "instant_from_json",
    "iso_utc",
    "json_response",
    "loads_body",
    "read_json",
    "read_object",
    "utc_wall_time",
]

# MySQL's DATETIME and DATE range: '1000-01-01 00:00:00' to '9999-12-31 23:59:59' (MySQL reference manual,
# "The DATE, DATETIME, and TIMESTAMP Types").
DATETIME_YEARS = range(1000, 10000)
_EPOCH = dt.datetime(1970, 1, 1)
_MS = dt.timedelta(milliseconds=1)
# The same range as milliseconds since the epoch (a JS time value, ECMA-262 §21.4.1.1).
_MIN_MS = (dt.datetime(DATETIME_YEARS.start, 1, 1) - _EPOCH) // _MS
_MAX_MS = (dt.datetime(DATETIME_YEARS.stop - 1, 12, 31, 23, 59, 59, 999000) - _EPOCH) // _MS


def utc_wall_time(text: str) -> dt.datetime | None:
    """An ISO-8601 date or date-time as naive UTC wall time, or None when it is not one or when it falls outside
    the DATETIME range. A value with an offset is converted to UTC; a naive one is already UTC (the server's
    local time). Converting an instant at either end of the calendar is None, never an OverflowError."""
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    offset = value.utcoffset()
    if offset is not None:
        try:
            value = value.replace(tzinfo=None) - offset  # 9999-12-31T23:30-01:00 is year 10000 in UTC
        except OverflowError:
            return None
    return value if value.year in DATETIME_YEARS else None


def instant_from_json(raw: Any) -> dt.datetime | None:
    """What `new Date(raw)` gives for a JSON string or number, as naive UTC wall time within the DATETIME range;
    None for anything else (an Invalid Date, or a date MySQL cannot store)."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int | float):
        if not (math.isfinite(raw) and _MIN_MS <= raw <= _MAX_MS):
            return None
        return _EPOCH + dt.timedelta(milliseconds=int(raw))  # TimeClip truncates toward zero, as int() does
    if isinstance(raw, str):
        return utc_wall_time(js_trim(raw))
    return None


def iso_utc(value: dt.datetime | dt.date) -> str:
    # isoformat is C code, 3x strftime's speed on the hot path (issue 15), and pads years below 1000 to four digits
    # as `Date.toJSON()` does (strftime's %Y does not).
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return value.isoformat(timespec="milliseconds") + "Z"
    return value.isoformat() + "T00:00:00.000Z"


def _default(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return iso_utc(value)
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, dt.timedelta):
        total = int(value.total_seconds())
        sign = "-" if total < 0 else ""
        total = abs(total)
        return f"{sign}{total // 3600:02d}:{total % 3600 // 60:02d}:{total % 60:02d}"
    if isinstance(value, bytes | bytearray):
        return {"type": "Buffer", "data": list(value)}  # how Node serialises a Buffer
    if isinstance(value, set | frozenset):
        return list(value)
    raise TypeError(f"cannot encode {type(value).__name__}")


def dumps(value: Any) -> bytes:
    return orjson.dumps(value, default=_default, option=orjson.OPT_PASSTHROUGH_DATETIME)


def loads_body(raw: bytes, content_type: str | None) -> Any:
    """Parse a request body like `express.json()` (strict mode), but answer 400 JSON instead of HTML.

    A body without a JSON content type is `{}` (contract-core §1.2); an empty body is `{}`; the top level must
    be an object or an array; malformed JSON, NaN/Infinity, invalid UTF-8 and nesting deeper than orjson's
    limit are all 400 `{"error": "Invalid JSON body"}`.
    """
    ctype = (content_type or "").split(";", 1)[0].strip().lower()
    if not (ctype == "application/json" or (ctype.startswith("application/") and ctype.endswith("+json"))):
        return {}
    if not raw.strip():
        return {}
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ApiError(400, "Invalid JSON body") from None
    if not isinstance(value, dict | list):
        raise ApiError(400, "Invalid JSON body")
    return value


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON response encoded once, with the old backend's value encodings."""
    return Response(dumps(data), status_code=status, headers=headers, media_type="application/json")


async def read_json(request: Request) -> Any:
    """The request body parsed like `express.json()` (see `loads_body`); the edge middleware caps its size."""
    return loads_body(await request.body(), request.headers.get("content-type"))


async def read_object(request: Request) -> dict[str, Any]:
    """A body that must be a JSON object (every body in the contract is one); an array is a 400."""
    body = await read_json(request)
    if not isinstance(body, dict):
        raise ApiError(400, "Request body must be a JSON object")
    return body
