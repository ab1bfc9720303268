"""`/api/desktop/*` (contract-work §4, D2-D17; D1 is the auth service's): the Electron client's HTTP facade.

Kept for the client (§1.8): paths, parameter names (camelCase and snake_case), `success: true` on mutations, the
idempotent `duplicate` / `ignored` 2xx answers, `null` bodies, plain arrays, and 401 before 404 under
`/api/desktop` (the catch-all route at the end).

Fixed (fix 5, I-3): only admins and employees may use the facade (a customer token gets 403), and a non-admin
acts on their own records only. Ids come from the token. To keep the desktop's replay queue free of poison
messages, touching someone else's record answers like an unknown one: D17 `ignored`, D12/D14 a no-op
`success`, D13 `[]`. A start whose uuid already belongs to another user is a 409 (I-23).
D17 is one atomic, idempotent step (I-4/I-5/I-6): the segment row is locked, closed only while open, the note
written once; no 255-minute cap; an invalid timestamp is a 400 that changes nothing.
"""

from __future__ import annotations

import math
from typing import Any

import pymysql
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from ccsm_core.codec import json_response, read_object
from ccsm_core.db import Database
from ccsm_core.errors import ApiError
from ccsm_core.guard import STAFF, Principal
from ccsm_core.params import js_number, normalize_string, positive_int, query_value
from ccsm_core.response_cache import PER_ROLE, UNCACHED
from ccsm_core.service import route

from . import bootstrap
from .task_values import (
    TASK_DATA_COLUMNS,
    TRACKING_DATA_COLUMNS,
    VALUE_COLUMNS,
    may_act_on,
    mysql_datetime,
    normalize_type,
    parse_instant,
    parse_value,
    refused_as_400,
    scoped_user_id,
)

ER_DUP_ENTRY = 1062
DURATION_MAX = 65535  # SMALLINT UNSIGNED: the column's own limit instead of the old 255 cap (I-4)
NOTE_MAX = 500
MAX_TASK_DATA = 100  # D17: one value per task-data definition of the task (the seed has 8)
INVALID_TASK_DATA = "Invalid task data value"
DATED_COLUMNS = frozenset({"value_date", "value_datetime"})


async def _principal(request: Request) -> Principal | None:
    principal: Principal | None = await request.state.guard.require(request, STAFF)
    return principal


def _q_positive(request: Request, name: str) -> int:
    return positive_int(query_value(request, name)) or 0


def _first(body: dict[str, Any], *names: str) -> Any:
    """`a ?? b`: the first value that is neither absent nor null."""
    for name in names:
        value = body.get(name)
        if value is not None:
            return value
    return None


def _uuid(value: Any) -> str:
    text = normalize_string(value) if value else ""
    if len(text) > 36:
        raise ApiError(400, "uuid is too long")  # CHAR(36); longer values used to be a 500
    return text


# --- D2 ---------------------------------------------------------------------------------------------------------


async def get_bootstrap(request: Request) -> Response:
    principal = await _principal(request)
    cache: bootstrap.BootstrapCache = request.state.bootstrap
    return await cache.respond(request, principal)


# --- D3 / D4 ----------------------------------------------------------------------------------------------------


async def project_task_data(request: Request) -> Response:
    await _principal(request)
    project_id, task_id = _q_positive(request, "projectId"), _q_positive(request, "taskId")
    if not project_id or not task_id:
        raise ApiError(400, "projectId and taskId are required")
    rows = await request.state.db.fetch_all(PROJECT_TASK_DATA_SQL, (project_id, task_id))
    return json_response(rows)


async def save_task_data(request: Request) -> Response:
    await _principal(request)
    body = await read_object(request)
    project_id = positive_int(body.get("projectId")) or 0
    task_id = positive_int(body.get("taskId")) or 0
    def_id = positive_int(body.get("dataDefId")) or 0
    value_type = normalize_string(body.get("valueType")) if body.get("valueType") else ""
    if not project_id or not task_id or not def_id or not value_type:
        raise ApiError(400, "projectId, taskId, dataDefId and valueType are required")
    column = TASK_DATA_COLUMNS.get(normalize_type(value_type))
    if column is None:
        raise ApiError(400, "Invalid value type")
    raw_value = body.get("value")
    value = parse_value(value_type, raw_value)
    if value is None and column in DATED_COLUMNS and raw_value is not None and raw_value != "":
        # A date MySQL cannot store (the old backend's 500; issue 12 item 8): refused, not stored as NULL.
        raise ApiError(400, INVALID_TASK_DATA)
    db: Database = request.state.db
    async with refused_as_400(INVALID_TASK_DATA), db.transaction() as cur:
        await cur.execute(PROJECT_TASK_SQL, (project_id, task_id))
        project_task = await cur.fetchone()
        if project_task is None:
            raise ApiError(404, "Project task not found")
        await cur.execute(DEF_EXISTS_SQL, (def_id,))
        if await cur.fetchone() is None:
            raise ApiError(400, "Unknown dataDefId")  # used to be a 500 (foreign key)
        await cur.execute(TASK_DATA_ROW_FOR_UPDATE_SQL, (project_task["id"], def_id))
        existing = await cur.fetchone()
        if existing is not None:
            await cur.execute(SET_TASK_DATA_VALUE_SQL[column], (value, existing["id"]))
            result = {"success": True, "updated": True}
        else:
            await cur.execute(INSERT_TASK_DATA_VALUE_SQL[column], (project_task["id"], def_id, value))
            result = {"success": True, "created": True}
    return json_response(result)


# --- D5-D9 ------------------------------------------------------------------------------------------------------


async def available_tasks(request: Request) -> Response:
    principal = await _principal(request)
    user_id = scoped_user_id(principal, query_value(request, "userId"))
    project_id = _q_positive(request, "projectId")
    if not user_id or not project_id:
        raise ApiError(400, "userId and projectId are required")
    rows = await request.state.db.fetch_all(AVAILABLE_TASKS_SQL, (user_id, project_id))
    return json_response(rows)


async def project_items(request: Request) -> Response:
    await _principal(request)
    project_id = _q_positive(request, "projectId")
    type_raw = query_value(request, "projectTypeId")
    project_type = js_number(type_raw or 0)
    if not project_id:
        raise ApiError(400, "projectId is required")
    db: Database = request.state.db
    rows = await db.fetch_all(PROJECT_ITEMS_SQL, (project_id,))
    if not rows and project_type == 1:
        rows = await db.fetch_all(CFS_ITEMS_SQL, (project_id,))
    elif not rows and project_type == 2:
        rows = await db.fetch_all(IM_ITEMS_SQL, (project_id,))
    return json_response(rows)


async def item_tracking_tasks(request: Request) -> Response:
    await _principal(request)
    project_id = _q_positive(request, "projectId")
    if not project_id:
        raise ApiError(400, "projectId is required")
    rows = await request.state.db.fetch_all(ITEM_TRACKING_TASKS_SQL, (project_id,))
    return json_response([r["task_id"] for r in rows])


async def item_status_rule(request: Request) -> Response:
    await _principal(request)
    project_id, task_id = _q_positive(request, "projectId"), _q_positive(request, "taskId")
    raw = query_value(request, "applyAfterFinish")
    if not project_id or not task_id:
        raise ApiError(400, "projectId and taskId are required")
    moment: float | None = None
    if raw is not None and raw != "":
        moment = js_number(raw)
        if not math.isfinite(moment):
            raise ApiError(400, "applyAfterFinish must be a number")  # NaN used to reach SQL: 500
    # I-22: a deterministic choice (lowest rule id) instead of LIMIT 1 without ORDER BY.
    row = await request.state.db.fetch_one(ITEM_STATUS_RULE_SQL, (project_id, task_id, moment, moment))
    if row is None:
        return json_response(None)
    return json_response({"statusId": row["statusId"], "applyAfterFinish": 1 if row["applyAfterFinish"] == 1 else 0})


async def set_item_status(request: Request) -> Response:
    await _principal(request)
    body = await read_object(request)
    item_id, status_id = positive_int(body.get("itemId")) or 0, positive_int(body.get("statusId")) or 0
    if not item_id or not status_id:
        raise ApiError(400, "itemId and statusId are required")
    db: Database = request.state.db
    async with db.transaction() as cur:
        await cur.execute(STATUS_EXISTS_SQL, (status_id,))
        if await cur.fetchone() is not None:  # an unknown status used to be a 500 (foreign key)
            await cur.execute(SET_ITEM_STATUS_SQL, (status_id, item_id))
    return json_response({"success": True})


# --- D10-D14 ----------------------------------------------------------------------------------------------------


async def unfinished_tasks(request: Request) -> Response:
    principal = await _principal(request)
    user_id = scoped_user_id(principal, query_value(request, "userId"))
    if not user_id:
        raise ApiError(400, "userId is required")
    return json_response(await request.state.db.fetch_all(UNFINISHED_SQL, (user_id,)))


async def assignments(request: Request) -> Response:
    principal = await _principal(request)
    user_id = scoped_user_id(principal, query_value(request, "userId"))
    if not user_id:
        raise ApiError(400, "userId is required")
    return json_response(await request.state.db.fetch_all(ASSIGNMENTS_SQL, (user_id,)))


def _owner_filter(principal: Principal | None) -> tuple[str, tuple[int, ...]]:
    if principal is None or principal.is_admin:
        return "", ()
    return " AND user_id = %s", (principal.id,)


async def assignment_accepted(request: Request) -> Response:
    principal = await _principal(request)
    body = await read_object(request)
    assignment_id = positive_int(body.get("assignmentId")) or 0
    if not assignment_id:
        raise ApiError(400, "assignmentId is required")
    extra, args = _owner_filter(principal)
    async with request.state.db.transaction() as cur:
        await cur.execute(ACCEPT_ASSIGNMENT_SQL + extra, (assignment_id, *args))
    return json_response({"success": True})


async def tracking_data(request: Request) -> Response:
    principal = await _principal(request)
    uuid = normalize_string(query_value(request, "uuid") or "")
    if not uuid:
        raise ApiError(400, "uuid is required")
    if principal is None or principal.is_admin:
        rows = await request.state.db.fetch_all(TRACKING_DATA_SQL, (uuid,))
    else:
        rows = await request.state.db.fetch_all(TRACKING_DATA_OWN_SQL, (uuid, principal.id))
    return json_response(rows)


async def unfinished_finished(request: Request) -> Response:
    principal = await _principal(request)
    body = await read_object(request)
    record_id = positive_int(body.get("recordId") or 0) or 0
    uuid = _uuid(body.get("uuid"))
    if not record_id and not uuid:
        raise ApiError(400, "recordId or uuid is required")
    extra, args = _owner_filter(principal)
    async with request.state.db.transaction() as cur:
        if uuid:
            await cur.execute(FINISH_BY_UUID_SQL + extra, (uuid, *args))
        else:
            await cur.execute(FINISH_BY_ID_SQL + extra, (record_id, *args))
    return json_response({"success": True})


# --- D15-D17 ----------------------------------------------------------------------------------------------------


async def _start(
    request: Request, principal: Principal | None, user_id: int, uuid: str, row: tuple[Any, ...]
) -> Response:
    db: Database = request.state.db
    try:
        # One autocommitted INSERT, as the old backend's `pool.query` was (db-changed reason `pool-query`): a
        # transaction around a single statement only cost two more round trips.
        await db.execute(INSERT_SEGMENT_SQL, (uuid, user_id, *row))
    except (pymysql.err.IntegrityError, pymysql.err.DataError) as exc:
        if isinstance(exc, pymysql.err.IntegrityError) and exc.args and exc.args[0] == ER_DUP_ENTRY:
            existing = await db.fetch_one(SEGMENT_OWNER_SQL, (uuid,))
            if existing is not None and existing["user_id"] != user_id:
                raise ApiError(409, "uuid belongs to another user's segment") from None  # I-23
            return json_response({"success": True, "duplicate": True})
        raise ApiError(400, "Invalid reference (user, activity, project, task)") from None  # FK: was a 500
    return json_response({"success": True})


async def start_unallocated(request: Request) -> Response:
    principal = await _principal(request)
    body = await read_object(request)
    uuid = _uuid(body.get("uuid"))
    user_id = scoped_user_id(principal, _first(body, "user_id", "userId"))
    activity_raw = _first(body, "activity_id", "activityId")
    activity = positive_int(4 if activity_raw is None else activity_raw) or 0
    if not uuid or not user_id or not activity:
        raise ApiError(400, "uuid, user_id/userId and activity_id/activityId are required")
    instant = parse_instant(body.get("timestamp"))
    row = (instant.date().isoformat(), None, activity, None, None, mysql_datetime(instant))
    return await _start(request, principal, user_id, uuid, row)


async def start_task(request: Request) -> Response:
    principal = await _principal(request)
    body = await read_object(request)
    uuid = _uuid(body.get("uuid"))
    user_id = scoped_user_id(principal, _first(body, "user_id", "userId"))
    project_id = positive_int(_first(body, "project_id", "projectId")) or 0
    task_id = positive_int(_first(body, "task_id", "taskId")) or 0
    if not uuid or not user_id or not project_id or not task_id:
        raise ApiError(400, "uuid, user_id/userId, project_id/projectId and task_id/taskId are required")
    item_raw = _first(body, "item_id", "itemId")
    item_id: int | None = None
    if item_raw is not None and item_raw != "":
        item_id = positive_int(item_raw)
        if item_id is None:
            raise ApiError(400, "Invalid item_id/itemId")  # NaN used to reach SQL: 500
    instant = parse_instant(body.get("timestamp"))
    row = (instant.date().isoformat(), project_id, 2, task_id, item_id, mysql_datetime(instant))
    return await _start(request, principal, user_id, uuid, row)


def _task_data(body: dict[str, Any]) -> list[tuple[int, str, Any]]:
    """D17's values as (definition, column, value), one per (definition, column): writing them one after another
    with ON DUPLICATE KEY UPDATE leaves what writing only the last of each leaves. Capped before any element is
    read, so a body cannot make the completion loop or write thousands of times (issue 12 item 2)."""
    raw = _first(body, "taskData", "task_data")
    if not isinstance(raw, list):
        return []
    if len(raw) > MAX_TASK_DATA:
        raise ApiError(400, f"taskData must have at most {MAX_TASK_DATA} entries")
    out: dict[tuple[int, str], Any] = {}
    for element in raw:
        if not isinstance(element, dict):
            continue
        def_id = positive_int(_first(element, "data_def_id", "dataDefId"))
        value_type = normalize_string(_first(element, "value_type", "valueType"))
        column = TRACKING_DATA_COLUMNS.get(value_type.lower())
        if not def_id or not value_type or column is None:
            continue
        key = (def_id, column)
        out.pop(key, None)  # the last value wins, in the order of the last write
        out[key] = parse_value(value_type, element.get("value"))
    return [(def_id, column, value) for (def_id, column), value in out.items()]


async def complete(request: Request) -> Response:
    principal = await _principal(request)
    body = await read_object(request)
    uuid = _uuid(body.get("uuid"))
    user_id = scoped_user_id(principal, _first(body, "user_id", "userId"))
    if not uuid or not user_id:
        raise ApiError(400, "uuid and user_id/userId are required")
    completed = 1 if js_number(_first(body, "is_completed_project_task", "isTaskCompleted") or 0) == 1 else 0
    note_raw = body.get("note")
    note = normalize_string(note_raw)[:NOTE_MAX] if note_raw is not None else ""
    task_data = _task_data(body)
    end = parse_instant(body.get("timestamp"))  # I-6: 400 before anything changes
    db: Database = request.state.db
    owner = None if principal is None or principal.is_admin else principal.id
    async with db.transaction() as cur:
        # One statement closes the segment if it is open and the caller may act on it, its duration and finish
        # computed in SQL as the old handler computed them; its row lock makes a concurrent duplicate wait, then
        # match nothing (I-5). Only when it matched nothing is the segment read, to say why.
        end_text = mysql_datetime(end)
        closed = await cur.execute(
            CLOSE_OPEN_SEGMENT_SQL, (end_text, end_text, DURATION_MAX, completed, uuid, owner, owner)
        )
        if closed != 1:
            await cur.execute(SEGMENT_OWNER_SQL, (uuid,))
            existing = await cur.fetchone()
            if existing is None or not may_act_on(principal, existing["user_id"]):
                return json_response({"success": True, "ignored": True})
            return json_response({"success": True, "duplicate": True})
        for def_id, column, value in task_data:
            try:
                await cur.execute(UPSERT_TRACKING_DATA_SQL[column], (uuid, def_id, value))
            except (pymysql.err.IntegrityError, pymysql.err.DataError):
                raise ApiError(400, "Invalid taskData (unknown definition or a value its column cannot hold)") from None
        if note:
            await cur.execute(SEGMENT_SQL, (uuid,))
            segment = await cur.fetchone()
            if segment["activity_id"] == 2:
                # I-8: the note's author is the segment's owner, not whoever sent the completion.
                await cur.execute(
                    INSERT_PROD_NOTE_SQL,
                    (segment["item_id"], segment["user_id"], segment["task_id"], segment["activity_id"], note,
                     segment["project_id"]),
                )  # fmt: skip
            else:
                await cur.execute(SET_SEGMENT_NOTE_SQL, (note, segment["id"]))
    return json_response({"success": True})


async def not_found(request: Request) -> Response:
    """Everything else under /api/desktop: authenticated first, then 404 (contract-work §1.1)."""
    await request.state.guard.require(request, None)
    raise ApiError(404, "Not found")


ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def routes() -> list[BaseRoute]:
    p = "/api/desktop"
    return [
        route(f"{p}/bootstrap", get_bootstrap, ["GET"], cache=UNCACHED),  # a cache of its own (bootstrap.py)
        route(f"{p}/project-task-data", project_task_data, ["GET"], cache=PER_ROLE),
        route(f"{p}/task-data", save_task_data, ["POST"]),
        route(f"{p}/available-tasks", available_tasks, ["GET"]),
        route(f"{p}/project-items", project_items, ["GET"], cache=PER_ROLE),
        route(f"{p}/item-tracking-tasks", item_tracking_tasks, ["GET"], cache=PER_ROLE),
        route(f"{p}/item-status-rule", item_status_rule, ["GET"], cache=PER_ROLE),
        route(f"{p}/item-status", set_item_status, ["POST"]),
        route(f"{p}/unfinished-tasks", unfinished_tasks, ["GET"]),
        route(f"{p}/assignments", assignments, ["GET"]),
        route(f"{p}/assignment-accepted", assignment_accepted, ["POST"]),
        route(f"{p}/tracking-data", tracking_data, ["GET"]),
        route(f"{p}/unfinished-finished", unfinished_finished, ["POST"]),
        route(f"{p}/activities/start-unallocated", start_unallocated, ["POST"]),
        route(f"{p}/activities/start-task", start_task, ["POST"]),
        route(f"{p}/activities/complete", complete, ["POST"]),
        route(f"{p}/{{rest:path}}", not_found, ALL_METHODS, cache=UNCACHED),
    ]


# --- queries ----------------------------------------------------------------------------------------------------

PROJECT_TASK_DATA_SQL = """
SELECT ptd.id, ptd.project_task_id AS projectTaskId, ptd.data_def_id AS dataDefId, tdd.label AS definitionLabel,
       tdd.value_type AS valueType, ptd.is_required AS isRequired, ptd.value_int, ptd.value_decimal,
       ptd.value_varchar, ptd.value_text, ptd.value_bool, ptd.value_date, ptd.value_datetime,
       ptd.value_customer_id, ptd.value_json
FROM project_task_data ptd
JOIN project_tasks pt ON pt.id = ptd.project_task_id
JOIN task_data_definitions tdd ON tdd.id = ptd.data_def_id
WHERE pt.project_id = %s AND pt.task_id = %s
ORDER BY ptd.id
"""

# Locking the project task first serialises concurrent D4 saves of it (no duplicate rows, no gap-lock deadlock).
PROJECT_TASK_SQL = "SELECT id FROM project_tasks WHERE project_id = %s AND task_id = %s ORDER BY id LIMIT 1 FOR UPDATE"
DEF_EXISTS_SQL = "SELECT id FROM task_data_definitions WHERE id = %s"
TASK_DATA_ROW_FOR_UPDATE_SQL = """
SELECT id FROM project_task_data WHERE project_task_id = %s AND data_def_id = %s ORDER BY id LIMIT 1 FOR UPDATE
"""

AVAILABLE_TASKS_SQL = """
SELECT t.id, t.description, 0 AS is_default, ptr.role_id AS roleId
FROM project_users pu
JOIN project_task_roles ptr ON ptr.project_id = pu.project_id AND ptr.role_id = pu.project_role_id
JOIN tasks t ON t.id = ptr.task_id
WHERE pu.user_id = %s AND pu.project_id = %s
ORDER BY pu.id, ptr.id
"""

PROJECT_ITEMS_SQL = """
SELECT i.id, i.label AS name, s.label AS status_label
FROM items i LEFT JOIN ref_item_status s ON s.id = i.status_id
WHERE i.project_id = %s
ORDER BY i.id
"""
CFS_ITEMS_SQL = "SELECT id, label AS name FROM cfs_items WHERE project_id = %s ORDER BY id"
IM_ITEMS_SQL = "SELECT id, label AS name FROM im_items WHERE project_id = %s ORDER BY id"

ITEM_TRACKING_TASKS_SQL = """
SELECT DISTINCT ist.task_id
FROM itemstatus_task ist JOIN ref_item_status ris ON ris.id = ist.item_status_id
WHERE ris.project_id = %s
ORDER BY ist.task_id
"""

ITEM_STATUS_RULE_SQL = """
SELECT ist.item_status_id AS statusId, ist.apply_after_finish AS applyAfterFinish
FROM itemstatus_task ist JOIN ref_item_status ris ON ris.id = ist.item_status_id
WHERE ris.project_id = %s AND ist.task_id = %s AND (%s IS NULL OR ist.apply_after_finish = %s)
ORDER BY ist.id
LIMIT 1
"""

STATUS_EXISTS_SQL = "SELECT id FROM ref_item_status WHERE id = %s"
SET_ITEM_STATUS_SQL = "UPDATE items SET status_id = %s WHERE id = %s"

UNFINISHED_SQL = """
SELECT utt.id, utt.uuid, utt.task_id AS taskId, utt.item_id AS itemId, utt.project_id AS projectId,
       utt.start_time AS startedAt, utt.end_time AS stoppedAt, p.name AS projectName, t.description AS taskName,
       i.label AS itemName
FROM users_time_tracking utt
LEFT JOIN projects p ON p.id = utt.project_id
LEFT JOIN tasks t ON t.id = utt.task_id
LEFT JOIN items i ON i.id = utt.item_id
WHERE utt.user_id = %s AND utt.activity_id = 2 AND utt.is_finished = 0
ORDER BY utt.start_time DESC, utt.id DESC
"""

ASSIGNMENTS_SQL = """
SELECT a.id, a.project_id AS projectId, a.task_id AS taskId, a.item_id AS itemId, a.is_accepted AS isAccepted,
       p.name AS projectName, t.description AS taskName, i.label AS itemName
FROM assigments a
LEFT JOIN projects p ON p.id = a.project_id
LEFT JOIN tasks t ON t.id = a.task_id
LEFT JOIN items i ON i.id = a.item_id
WHERE a.user_id = %s AND (a.is_accepted = 0 OR a.is_accepted IS NULL)
ORDER BY a.id DESC
"""

ACCEPT_ASSIGNMENT_SQL = "UPDATE assigments SET is_accepted = 1 WHERE id = %s"

TRACKING_DATA_SQL = """
SELECT uttd.data_def_id AS dataDefId, tdd.value_type AS valueType, uttd.value_int, uttd.value_decimal,
       uttd.value_varchar, uttd.value_text, uttd.value_bool, uttd.value_date, uttd.value_datetime, uttd.value_json
FROM users_time_tracking_data uttd JOIN task_data_definitions tdd ON tdd.id = uttd.data_def_id
WHERE uttd.tracking_uuid = %s
ORDER BY uttd.data_def_id
"""
TRACKING_DATA_OWN_SQL = TRACKING_DATA_SQL.replace(
    "WHERE uttd.tracking_uuid = %s",
    "WHERE uttd.tracking_uuid = %s AND EXISTS (SELECT 1 FROM users_time_tracking s "
    "WHERE s.uuid = uttd.tracking_uuid AND s.user_id = %s)",
)

FINISH_BY_UUID_SQL = "UPDATE users_time_tracking SET is_finished = 1 WHERE uuid = %s"
FINISH_BY_ID_SQL = "UPDATE users_time_tracking SET is_finished = 1 WHERE id = %s"

INSERT_SEGMENT_SQL = """
INSERT INTO users_time_tracking
  (uuid, user_id, date, project_id, activity_id, task_id, item_id, start_time, end_time, duration, is_finished, note)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, NULL, NULL, NULL, NULL)
"""
SEGMENT_OWNER_SQL = "SELECT user_id FROM users_time_tracking WHERE uuid = %s"
# D17. Duration: whole minutes from start to end, floored, within [0, the column's maximum]: the old
# `Math.floor((end - start) / 60000)` (start is whole seconds, so the end's truncation to whole seconds changes
# no floor). A segment other than a task's (activity 2) is always finished. The owner test is `may_act_on`'s.
CLOSE_OPEN_SEGMENT_SQL = """
UPDATE users_time_tracking
SET end_time = %s,
    duration = LEAST(GREATEST(FLOOR(TIMESTAMPDIFF(SECOND, start_time, %s) / 60), 0), %s),
    is_finished = IF(activity_id <> 2, 1, %s)
WHERE uuid = %s AND end_time IS NULL AND (%s IS NULL OR user_id = %s)
"""
SEGMENT_SQL = "SELECT id, activity_id, user_id, project_id, task_id, item_id FROM users_time_tracking WHERE uuid = %s"
INSERT_PROD_NOTE_SQL = """
INSERT INTO prod_notes (item_id, unit_id, user_id, task_id, activity_id, note, created_at, project_id)
VALUES (%s, NULL, %s, %s, %s, %s, NOW(), %s)
"""
SET_SEGMENT_NOTE_SQL = "UPDATE users_time_tracking SET note = %s WHERE id = %s"

# One statement per value column, built once from the column whitelists (`task_values`), never from a request:
# the column a value goes to depends on its type, and placeholders cannot name columns.
SET_TASK_DATA_VALUE_SQL: dict[str, str] = {
    column: "UPDATE project_task_data SET "  # noqa: S608 - whitelisted column names
    + ", ".join(f"{c} = NULL" for c in VALUE_COLUMNS if c != column)
    + f", {column} = %s, updated_at = NOW() WHERE id = %s"
    for column in set(TASK_DATA_COLUMNS.values())
}
INSERT_TASK_DATA_VALUE_SQL: dict[str, str] = {
    column: f"INSERT INTO project_task_data (project_task_id, data_def_id, {column}, created_at, updated_at) "  # noqa: S608
    "VALUES (%s, %s, %s, NOW(), NOW())"
    for column in set(TASK_DATA_COLUMNS.values())
}
UPSERT_TRACKING_DATA_SQL: dict[str, str] = {
    column: f"INSERT INTO users_time_tracking_data (tracking_uuid, data_def_id, {column}) VALUES (%s, %s, %s) "  # noqa: S608
    f"ON DUPLICATE KEY UPDATE {column} = VALUES({column}), updated_at = CURRENT_TIMESTAMP"
    for column in set(TRACKING_DATA_COLUMNS.values())
}
