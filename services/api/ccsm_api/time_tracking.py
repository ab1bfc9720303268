"""`/api/time-tracking` (contract-work §3, T1-T7): the production sheet, metrics and manual segments.

Kept: paths, messages, statuses, field names and encodings (T2's `duration` stays a DECIMAL string, as mysql2
returned it). Fixed: non-string times and malformed dates are 400s (I-1, I-28); T3/T4 lock the owner's user row
before the overlap check, so check and write are atomic, and the check compares instants, not only rows filed
under the same `date` (I-19); an open row still only conflicts when its start falls inside the new range.
The time-zone model is documented in `task_values`.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid as uuidlib
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from ccsm_core.codec import json_response, read_object
from ccsm_core.db import Database
from ccsm_core.errors import ApiError
from ccsm_core.guard import STAFF, Principal
from ccsm_core.params import js_number, positive_number, query_value
from ccsm_core.service import route

from .task_values import may_act_on, refused_as_400, scoped_user_id

RANGE_REQUIRED = "userId and either date or dateFrom/dateTo are required"
OVERLAP = "Time range overlaps an existing entry."
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_HHMM_RE = re.compile(r"^\d{1,2}:\d{2}$")
PAGES_TASKS = (1, 3, 6, 34, 36, 38)  # T2's hard-coded "pages" tasks (seed header)
MAX_BULK_IDS = 10_000  # T7: a production sheet selects one user's segments of a few days


async def _principal(request: Request) -> Principal | None:
    principal: Principal | None = await request.state.guard.require(request, STAFF)
    return principal


def _entry_id(request: Request) -> int:
    """Path ids use plain `Number()`: NaN and 0 are 400; a negative or fractional id simply matches nothing."""
    n = js_number(request.path_params["id"])
    if n != n or n == 0:
        raise ApiError(400, "Invalid entry id")
    return int(n) if n.is_integer() and abs(n) < 2**63 else -1


def _valid_date(text: str) -> bool:
    if not _DATE_RE.match(text):
        return False
    try:
        dt.date.fromisoformat(text)
    except ValueError:
        return False
    return True


def _date_range(request: Request, principal: Principal | None) -> tuple[int, str, str]:
    user_id = scoped_user_id(principal, query_value(request, "userId"))
    date = query_value(request, "date")
    date_from = query_value(request, "dateFrom")
    date_to = query_value(request, "dateTo")
    if not user_id or not (date or (date_from and date_to)):
        raise ApiError(400, RANGE_REQUIRED)
    # `?date=&dateFrom=...&dateTo=...` used to query `BETWEEN '' AND ''` (always empty); an empty date is absent.
    start, end = (date, date) if date else (date_from or "", date_to or "")
    if not (_valid_date(start) and _valid_date(end)):
        raise ApiError(400, "date, dateFrom and dateTo must be YYYY-MM-DD")  # I-28: used to reach SQL unchecked
    return user_id, start, end


# --- T1 / T2 ----------------------------------------------------------------------------------------------------


async def list_entries(request: Request) -> Response:
    principal = await _principal(request)
    user_id, start, end = _date_range(request, principal)
    rows = await request.state.db.fetch_all(SHEET_SQL, (user_id, start, end))
    return json_response(rows)


async def metrics(request: Request) -> Response:
    principal = await _principal(request)
    user_id, start, end = _date_range(request, principal)
    rows = await request.state.db.fetch_all(METRICS_SQL, (user_id, start, end))
    return json_response(rows)


# --- T3 ---------------------------------------------------------------------------------------------------------


def _minutes(text: Any) -> int | None:
    """`H:MM`/`HH:MM` (T3 splits on ':' and checks parts one and two) -> minutes after midnight."""
    if not isinstance(text, str):
        return None
    parts = text.split(":")
    if len(parts) != 2 or not parts[0].strip().isdigit() or not parts[1].strip().isdigit():
        return None
    hour, minute = int(parts[0]), int(parts[1])
    if not (0 <= hour <= 23 and 0 <= minute <= 59):
        return None
    return hour * 60 + minute


def _wall(date: str, minutes: int) -> str:
    return f"{date} {minutes // 60:02d}:{minutes % 60:02d}:00"


async def _lock_user_and_check_overlap(cur: Any, user_id: int, start: str, end: str, exclude_id: int) -> None:
    await cur.execute(LOCK_USER_SQL, (user_id,))
    if await cur.fetchone() is None:
        raise ApiError(400, "Unknown userId")  # used to be a foreign-key 500
    await cur.execute(OVERLAP_SQL, (user_id, exclude_id, end, start))
    if await cur.fetchone():
        raise ApiError(409, OVERLAP)


async def create_entry(request: Request) -> Response:
    principal = await _principal(request)
    body = await read_object(request)
    user_id = scoped_user_id(principal, body.get("userId"))
    date, start_raw, end_raw = body.get("date"), body.get("startTime"), body.get("endTime")
    activity = js_number(body.get("activityId"))
    if not user_id or not date or not start_raw or not end_raw or activity != activity or activity == 0:
        raise ApiError(400, "userId, date, activityId, startTime, and endTime are required")
    start, end = _minutes(start_raw), _minutes(end_raw)
    if start is None or end is None:
        raise ApiError(400, "Invalid start or end time")  # also for non-string times (I-1: used to crash)
    if end <= start:
        raise ApiError(400, "End time must be after start time")
    if not isinstance(date, str) or not _valid_date(date):
        raise ApiError(400, "date must be YYYY-MM-DD")  # I-28
    if not activity.is_integer() or not 0 < activity < 2**31:
        raise ApiError(400, "Invalid activityId")  # I-24: negative ids used to pass, then hit the FK
    item = body.get("itemId")
    item_n = js_number(item) if item else None
    if item_n is not None and not (item_n.is_integer() and 0 < item_n < 2**32):
        raise ApiError(400, "Invalid itemId")
    note = body.get("note")
    if note is not None and not isinstance(note, str):
        raise ApiError(400, "note must be a string")
    new_uuid = str(uuidlib.uuid4())
    start_s, end_s = _wall(date, start), _wall(date, end)
    db: Database = request.state.db
    async with refused_as_400("Invalid time entry (unknown activity, or a value too large)"), db.transaction() as cur:
        await _lock_user_and_check_overlap(cur, user_id, start_s, end_s, 0)
        await cur.execute(
            INSERT_MANUAL_SQL,
            (new_uuid, user_id, date, int(activity), int(item_n) if item_n else None, start_s, end_s, end - start,
             note),
        )  # fmt: skip
        new_id = cur.lastrowid
    return json_response({"id": new_id, "uuid": new_uuid}, 201)


# --- T4 / T5 ----------------------------------------------------------------------------------------------------


def _pick(body: dict[str, Any], *names: str) -> Any:
    for name in names:
        if body.get(name) is not None:
            return body[name]
    return None


def _hhmm(value: Any) -> str | None:
    if not isinstance(value, str) or not _HHMM_RE.match(value):
        return None
    hour, minute = (int(p) for p in value.split(":"))
    if hour > 23 or minute > 59:
        return None
    return f"{hour:02d}:{minute:02d}"


async def update_entry(request: Request) -> Response:
    principal = await _principal(request)
    entry_id = _entry_id(request)
    body = await read_object(request)
    start_date = _pick(body, "startDate", "start_date")
    end_date = _pick(body, "endDate", "end_date")
    if not (isinstance(start_date, str) and _DATE_RE.match(start_date)) or not (
        isinstance(end_date, str) and _DATE_RE.match(end_date)
    ):
        raise ApiError(400, "startDate and endDate are required (YYYY-MM-DD)")
    start = _hhmm(_pick(body, "startTime", "start_time"))
    if start is None:
        raise ApiError(400, "startTime is required (HH:MM)")
    end_raw = _pick(body, "endTime", "end_time")
    end: str | None = None
    if end_raw is not None and end_raw != "":
        end = _hhmm(end_raw)
        if end is None:
            raise ApiError(400, "endTime must be HH:MM or empty")
        if end <= start:
            raise ApiError(400, "End time must be after start time")
    if start_date != end_date:
        raise ApiError(400, "Start date and end date must match")
    if not _valid_date(start_date):
        raise ApiError(400, "startDate and endDate are required (YYYY-MM-DD)")  # e.g. 2026-02-31
    note_given = "note" in body
    note = body.get("note")
    if note is not None and not isinstance(note, str):
        raise ApiError(400, "note must be a string")
    if isinstance(note, str):
        note = note.strip() or None
    start_s = f"{start_date} {start}:00"
    end_s = f"{start_date} {end}:00" if end else None
    duration = None
    if end:
        duration = (int(end[:2]) * 60 + int(end[3:])) - (int(start[:2]) * 60 + int(start[3:]))
    db: Database = request.state.db
    async with refused_as_400("Invalid time entry (a value too large)"), db.transaction() as cur:
        row = await _lock_own_entry(cur, entry_id, principal)
        if end_s is not None:
            await _lock_user_and_check_overlap(cur, row["user_id"], start_s, end_s, entry_id)
        if note_given:
            await cur.execute(UPDATE_ENTRY_NOTE_SQL, (start_date, start_s, end_s, duration, note, entry_id))
        else:
            await cur.execute(UPDATE_ENTRY_SQL, (start_date, start_s, end_s, duration, entry_id))
    return json_response({"success": True})


async def update_note(request: Request) -> Response:
    principal = await _principal(request)
    entry_id = _entry_id(request)
    body = await read_object(request)
    note = body.get("note")
    if note is not None and not isinstance(note, str | int | float):
        raise ApiError(400, "note must be a string")  # an object used to be expanded into the SQL
    if isinstance(note, bool):
        note = "true" if note else "false"
    elif isinstance(note, int | float):
        note = str(note)
    db: Database = request.state.db
    async with refused_as_400("note is too long"), db.transaction() as cur:
        await _lock_own_entry(cur, entry_id, principal)
        await cur.execute(SET_NOTE_SQL, (note, entry_id))
    return json_response({"success": True})


async def _lock_own_entry(cur: Any, entry_id: Any, principal: Principal | None) -> dict[str, Any]:
    """The segment, locked for this transaction: 404 when it does not exist, 403 when it is not the caller's
    (unless admin)."""
    await cur.execute(SELECT_ENTRY_FOR_UPDATE_SQL, (entry_id,))
    row: dict[str, Any] | None = await cur.fetchone()
    if row is None:
        raise ApiError(404, "Entry not found")
    if not may_act_on(principal, row["user_id"]):
        raise ApiError(403, "Forbidden")
    return row


# --- T6 / T7 ----------------------------------------------------------------------------------------------------


async def delete_entry(request: Request) -> Response:
    principal = await _principal(request)
    entry_id = _entry_id(request)
    db: Database = request.state.db
    async with db.transaction() as cur:
        await cur.execute(SELECT_ENTRY_FOR_UPDATE_SQL, (entry_id,))
        row = await cur.fetchone()
        if row is None:
            return json_response({"success": True, "deleted": 0})
        if not may_act_on(principal, row["user_id"]):
            raise ApiError(403, "Forbidden")
        if row["uuid"]:
            await cur.execute(DELETE_DATA_SQL, (row["uuid"],))
        deleted = await cur.execute(DELETE_ENTRY_SQL, (entry_id,))
    return json_response({"success": True, "deleted": deleted})


async def bulk_delete(request: Request) -> Response:
    principal = await _principal(request)
    body = await read_object(request)
    raw = body.get("ids")
    # The cap comes before any element is read, and ids are collected in an ordered set: 18,699 distinct ids
    # (a 101 KB body) used to hold the event loop for 3.4 s in a list membership test (issue 12 item 2).
    if isinstance(raw, list) and len(raw) > MAX_BULK_IDS:
        raise ApiError(400, "Too many ids")
    ids: dict[int, None] = {}
    for value in raw if isinstance(raw, list) else ():
        n = positive_number(value)
        if n and n.is_integer() and n < 2**63:
            ids[int(n)] = None
    if not ids:
        raise ApiError(400, "ids is required")
    marks = ", ".join(["%s"] * len(ids))
    db: Database = request.state.db
    async with db.transaction() as cur:
        await cur.execute(SELECT_MANY_FOR_UPDATE_SQL.format(marks=marks), list(ids))
        rows = await cur.fetchall()
        if any(not may_act_on(principal, r["user_id"]) for r in rows):
            raise ApiError(403, "Forbidden")
        uuids = [r["uuid"] for r in rows if r["uuid"]]
        if uuids:
            await cur.execute(DELETE_DATA_MANY_SQL.format(marks=", ".join(["%s"] * len(uuids))), uuids)
        deleted = 0
        if rows:
            found = [r["id"] for r in rows]
            deleted = await cur.execute(DELETE_MANY_SQL.format(marks=", ".join(["%s"] * len(found))), found)
    return json_response({"success": True, "deleted": deleted})


def routes() -> list[BaseRoute]:
    return [
        route("/api/time-tracking/bulk-delete", bulk_delete, ["POST"]),
        route("/api/time-tracking/metrics", metrics, ["GET"]),
        route("/api/time-tracking/{id}/note", update_note, ["PUT"]),
        route("/api/time-tracking/{id}", delete_entry, ["DELETE"]),
        route("/api/time-tracking/{id}", update_entry, ["PUT"]),
        route("/api/time-tracking", list_entries, ["GET"]),
        route("/api/time-tracking", create_entry, ["POST"]),
    ]


# --- queries ----------------------------------------------------------------------------------------------------
# cfs_items/im_items are part of the baseline schema, so T1 joins them directly (I-29: no information_schema
# lookups per request).

SHEET_SQL = """
SELECT utt.id, utt.activity_id, utt.project_id, utt.task_id, utt.item_id, utt.date, utt.start_time, utt.end_time,
       utt.duration, utt.note,
       a.name AS activity_name, a.description AS activity_description,
       t.description AS task_name, rtc.name AS task_type, p.name AS project_name,
       COALESCE(i.label, ci.label, ii.label) AS item_name,
       COALESCE(d.value_int, CAST(d.value_decimal AS SIGNED)) AS pages,
       CASE WHEN utt.activity_id = 2
                 AND COALESCE(utt.duration, TIMESTAMPDIFF(MINUTE, utt.start_time, utt.end_time)) > 0
                 AND COALESCE(d.value_int, d.value_decimal) IS NOT NULL
            THEN ROUND(COALESCE(d.value_int, d.value_decimal)
                       / COALESCE(utt.duration, TIMESTAMPDIFF(MINUTE, utt.start_time, utt.end_time)), 2)
            ELSE NULL END AS pagesPerMinute
FROM users_time_tracking utt
LEFT JOIN activities a ON a.id = utt.activity_id
LEFT JOIN tasks t ON t.id = utt.task_id
LEFT JOIN ref_task_category rtc ON rtc.id = t.category_id
LEFT JOIN projects p ON p.id = utt.project_id
LEFT JOIN items i ON i.id = utt.item_id
LEFT JOIN cfs_items ci ON ci.id = utt.item_id AND ci.project_id = utt.project_id
LEFT JOIN im_items ii ON ii.id = utt.item_id AND ii.project_id = utt.project_id
LEFT JOIN users_time_tracking_data d ON d.tracking_uuid = utt.uuid AND d.data_def_id = 1
WHERE utt.user_id = %s AND utt.date BETWEEN %s AND %s
ORDER BY utt.date DESC, utt.start_time DESC, utt.id DESC
"""

METRICS_SQL = f"""
SELECT x.id, x.project_id, x.task_id, x.date, x.start_time, x.end_time, x.eff AS duration, x.task_name,
       x.project_name, x.pages,
       CASE WHEN x.eff > 0 AND x.pages IS NOT NULL THEN ROUND(x.pages / x.eff, 2) ELSE NULL END AS pagesPerMinute
FROM (
  SELECT utt.id, utt.project_id, utt.task_id, utt.date, utt.start_time, utt.end_time,
         CASE WHEN utt.duration IS NOT NULL AND utt.duration <> 0 THEN CAST(utt.duration AS DECIMAL(20, 0))
              WHEN utt.end_time IS NOT NULL
                THEN CAST(GREATEST(1, CEIL(TIMESTAMPDIFF(SECOND, utt.start_time, utt.end_time) / 60))
                          AS DECIMAL(20, 0))
              ELSE NULL END AS eff,
         t.description AS task_name, p.name AS project_name, d.value_int AS pages
  FROM users_time_tracking utt
  LEFT JOIN tasks t ON t.id = utt.task_id
  LEFT JOIN projects p ON p.id = utt.project_id
  LEFT JOIN users_time_tracking_data d ON d.tracking_uuid = utt.uuid AND d.data_def_id = 1
  WHERE utt.user_id = %s AND utt.date BETWEEN %s AND %s
    AND utt.activity_id = 2 AND utt.task_id IN ({", ".join(str(t) for t in PAGES_TASKS)})
) x
ORDER BY x.date DESC, x.start_time DESC, x.id DESC
"""  # noqa: S608 - a constant id list

LOCK_USER_SQL = "SELECT id FROM users WHERE id = %s FOR UPDATE"

OVERLAP_SQL = """
SELECT id FROM users_time_tracking
WHERE user_id = %s AND id <> %s AND start_time < %s AND COALESCE(end_time, start_time) > %s
LIMIT 1
"""

INSERT_MANUAL_SQL = """
INSERT INTO users_time_tracking
  (uuid, user_id, date, project_id, activity_id, task_id, item_id, start_time, end_time, duration, is_finished, note)
VALUES (%s, %s, %s, NULL, %s, NULL, %s, %s, %s, %s, NULL, %s)
"""

SELECT_ENTRY_FOR_UPDATE_SQL = "SELECT id, uuid, user_id, date FROM users_time_tracking WHERE id = %s FOR UPDATE"

UPDATE_ENTRY_SQL = """
UPDATE users_time_tracking SET date = %s, start_time = %s, end_time = %s, duration = %s WHERE id = %s
"""

UPDATE_ENTRY_NOTE_SQL = """
UPDATE users_time_tracking SET date = %s, start_time = %s, end_time = %s, duration = %s, note = %s WHERE id = %s
"""

SET_NOTE_SQL = "UPDATE users_time_tracking SET note = %s WHERE id = %s"
DELETE_DATA_SQL = "DELETE FROM users_time_tracking_data WHERE tracking_uuid = %s"
DELETE_ENTRY_SQL = "DELETE FROM users_time_tracking WHERE id = %s"
SELECT_MANY_FOR_UPDATE_SQL = "SELECT id, uuid, user_id FROM users_time_tracking WHERE id IN ({marks}) FOR UPDATE"
DELETE_DATA_MANY_SQL = "DELETE FROM users_time_tracking_data WHERE tracking_uuid IN ({marks})"
DELETE_MANY_SQL = "DELETE FROM users_time_tracking WHERE id IN ({marks})"
