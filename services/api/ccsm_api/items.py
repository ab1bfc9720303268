"""`/api/items*` (admin and employee): contract-core §7 I1, I2, I4 (I3, the Jira sync, is in `jira.py`).

Kept: shapes, messages (including the trailing full stop of "Project is missing item type."), the item label and
code formats, COUNT-based project and category sequences, fractional counts rounding up, statuses of other
projects not being counted (core 19).
Fixed: the 404/400 branches of POST no longer leave a transaction open (core 12: they run inside
`db.transaction()`, which rolls back); the sequences are race-free because the project row is locked
(`SELECT ... FOR UPDATE`) before they are computed, so concurrent POSTs for one project queue up (core 15);
`count` is capped; a non-numeric `categoryId`/`userId` or an unknown category is a 400, not a SQL error;
`created_by_user_id` comes from the token (core 8), and from the body only when auth is off (fix 2).
"""

from __future__ import annotations

import math
from typing import Any

import pymysql
from starlette.requests import Request
from starlette.responses import Response

from ccsm_api import inputs
from ccsm_api.inputs import SqlNumber
from ccsm_core.codec import json_response, read_object
from ccsm_core.db import Database, Row
from ccsm_core.errors import ApiError
from ccsm_core.guard import STAFF, Principal
from ccsm_core.params import js_number, js_trim, query_value

MAX_COUNT = 1000  # one request may create at most this many items (the old backend had no bound)


def created_by(principal: Principal | None, body: dict[str, Any]) -> SqlNumber | None:
    """The creator: the caller (core 8); with auth off (local only) the body's `userId`, as before."""
    if principal is not None:
        return principal.id
    return inputs.optional_number(body.get("userId"), "userId")


def parse_count(value: Any) -> int:
    """`Math.max(1, Number(count || 1))` looped with `i < count`: 2.5 makes 3 items; NaN/Infinity are a 400."""
    n = js_number(value) if value else 1.0
    if math.isnan(n) or not math.isfinite(n):
        raise ApiError(400, "count must be at least 1")
    count = max(1, math.ceil(n))
    if count > MAX_COUNT:
        raise ApiError(400, f"count must be at most {MAX_COUNT}")
    return count


async def status_summary(request: Request) -> Response:
    await request.state.guard.require(request, STAFF)
    project_id = inputs.truthy_number(query_value(request, "projectId"), "projectId is required")
    db: Database = request.state.db
    statuses = await select_status_counts(db, project_id)
    registered = await db.fetch_one(
        "SELECT COUNT(*) AS count FROM items WHERE project_id = %s AND status_id IS NULL", (project_id,)
    )
    result: list[dict[str, Any]] = [
        {"id": None, "label": "Registered", "count": int(registered["count"]) if registered else 0}
    ]
    result.extend({"id": r["id"], "label": r["label"], "count": int(r["count"])} for r in statuses)
    return json_response(result)


async def list_items(request: Request) -> Response:
    await request.state.guard.require(request, STAFF)
    project_id = inputs.truthy_number(query_value(request, "projectId"), "projectId is required")
    return json_response(await select_items(request.state.db, project_id))


async def create_items(request: Request) -> Response:
    principal = await request.state.guard.require(request, STAFF)
    body = await read_object(request)
    project_id = inputs.truthy_number(body.get("projectId"), "projectId is required")
    count = parse_count(body.get("count"))
    category_id = inputs.optional_number(body.get("categoryId"), "categoryId")
    user_id = created_by(principal, body)
    db: Database = request.state.db
    created: list[dict[str, Any]] = []
    try:
        async with db.transaction() as cur:
            # The lock is what makes the sequences race-free: a second POST for this project waits here until
            # the first one has committed, and then counts its items.
            project = await lock_project(cur, project_id)
            if project is None:
                raise ApiError(404, "Project not found")
            item_type_id = project["itemTypeId"]
            if not item_type_id:
                raise ApiError(400, "Project is missing item type.")
            type_name = await item_type_name(cur, item_type_id)
            category_label = "NA"
            if category_id is not None:
                label = await category_label_of(cur, category_id)
                if label is None:
                    raise ApiError(400, "Category not found")
                category_label = label
            project_seq = await count_items(cur, project_id) + 1
            category_seq = await count_items_in_category(cur, project_id, category_id) + 1
            for _ in range(count):
                label = js_trim(f"{category_label} {type_name}{category_seq}")
                new_id = await insert_item(
                    cur, label, project_id, item_type_id, category_id, project["unitTypeId"], user_id
                )
                code = f"{category_label}-{project_id}.{new_id}-{project_seq}-{category_seq}"
                await set_item_code(cur, new_id, code)
                created.append({"id": new_id, "code": code})
                project_seq += 1
                category_seq += 1
    except pymysql.err.MySQLError as exc:
        if inputs.error_code(exc) in (inputs.ER_NO_REFERENCED_ROW, inputs.ER_NO_REFERENCED_ROW_2):
            raise ApiError(400, "userId does not refer to a user") from None
        mapped = inputs.data_error(exc)
        if mapped is None:
            raise
        raise mapped from None
    return json_response({"items": created}, 201)


# --- queries ----------------------------------------------------------------------------------------------------


async def select_status_counts(db: Database, project_id: SqlNumber) -> list[Row]:
    return await db.fetch_all(
        "SELECT s.id, s.label, COUNT(i.id) AS count FROM ref_item_status s "
        "LEFT JOIN items i ON i.status_id = s.id AND i.project_id = %s "
        "WHERE s.project_id = %s GROUP BY s.id, s.label ORDER BY s.label",
        (project_id, project_id),
    )


async def select_items(db: Database, project_id: SqlNumber) -> list[Row]:
    return await db.fetch_all(
        "SELECT i.id, i.code, i.label, i.project_id AS projectId, i.item_category_id AS categoryId, "
        "i.created_at AS createdAt, i.updated_at AS updatedAt, s.label AS statusLabel "
        "FROM items i LEFT JOIN ref_item_status s ON s.id = i.status_id "
        "WHERE i.project_id = %s ORDER BY i.id",
        (project_id,),
    )


async def lock_project(cur: Any, project_id: SqlNumber) -> Row | None:
    await cur.execute(
        "SELECT item_id AS itemTypeId, unit_id AS unitTypeId FROM projects WHERE id = %s FOR UPDATE", (project_id,)
    )
    row: Row | None = await cur.fetchone()
    return row


async def item_type_name(cur: Any, item_type_id: int) -> str:
    await cur.execute("SELECT name FROM ref_item_types WHERE id = %s", (item_type_id,))
    row = await cur.fetchone()
    name = js_trim(str(row["name"])) if row and row["name"] is not None else ""
    return name or "NA"


async def category_label_of(cur: Any, category_id: SqlNumber) -> str | None:
    await cur.execute("SELECT label FROM ref_item_category WHERE id = %s", (category_id,))
    row = await cur.fetchone()
    if row is None:
        return None
    return js_trim(str(row["label"] or "")) or "NA"


async def count_items(cur: Any, project_id: SqlNumber) -> int:
    await cur.execute("SELECT COUNT(*) AS n FROM items WHERE project_id = %s", (project_id,))
    row = await cur.fetchone()
    return int(row["n"])


async def count_items_in_category(cur: Any, project_id: SqlNumber, category_id: SqlNumber | None) -> int:
    await cur.execute(
        "SELECT COUNT(*) AS n FROM items WHERE project_id = %s AND item_category_id <=> %s", (project_id, category_id)
    )
    row = await cur.fetchone()
    return int(row["n"])


async def insert_item(
    cur: Any,
    label: str,
    project_id: SqlNumber,
    item_type_id: int,
    category_id: SqlNumber | None,
    unit_type_id: int | None,
    user_id: SqlNumber | None,
) -> int:
    await cur.execute(
        "INSERT INTO items (code, label, project_id, item_type_id, item_category_id, unit_type_id, status_id, "
        "created_by_user_id, created_at) VALUES ('', %s, %s, %s, %s, %s, NULL, %s, NOW())",
        (label, project_id, item_type_id, category_id, unit_type_id, user_id),
    )
    return int(cur.lastrowid)


async def set_item_code(cur: Any, item_id: int, code: str) -> None:
    await cur.execute("UPDATE items SET code = %s WHERE id = %s", (code, item_id))
