"""`/api/lookups/*` (any authenticated user, customers included): contract-core §6 (L1-L5).

Kept: every shape, order and fallback, including the ones listed as bugs that a client may rely on: the
customer role may call all five (core 7), `fullName` is null when a name part is NULL and inactive users are
listed (core 17), an unknown `projectTypeCode` returns every category (core 18: the web client sends
`undefined` for projects without a type and then shows every category), itemStatuses mixes all projects (19).
Fixed: the project form reads its parts in one round trip on one pooled connection (one after another on the
old schemas' fallbacks) instead of ten parallel queries against a 10-connection pool; an object/array or an
oversized value is a 400; the duplicate fallback of the POST cannot crash the process.
"""

from __future__ import annotations

import re
from typing import Any

import pymysql
from starlette.requests import Request
from starlette.responses import Response

from ccsm_api import inputs
from ccsm_core.codec import json_response, read_object
from ccsm_core.db import Database, Row
from ccsm_core.errors import ApiError
from ccsm_core.params import query_value

_NON_KEY = re.compile(r"[^a-z0-9]+")


def derive_key(label: str) -> str:
    """`label.toLowerCase().replace(/[^a-z0-9]+/g, '_').replace(/^_+|_+$/g, '')`."""
    return _NON_KEY.sub("_", label.lower()).strip("_")


async def project_form(request: Request) -> Response:
    await request.state.guard.require(request, None)
    db: Database = request.state.db
    try:
        # Every part in one round trip (`Database.snapshot`) on the current schema, which has no `units` ...
        units_table, unit_types, *parts = await db.snapshot(PROJECT_FORM_SNAPSHOT)
        if units_table:
            result = await _project_form_one_by_one(db)
        else:
            result = dict(zip(PROJECT_FORM_KEYS, parts, strict=True))
            result["units"] = unit_types
    except pymysql.err.MySQLError as exc:
        # ... and the older schemas' (`units`, with `name` or `label`; no definitions) one query at a time.
        if not inputs.is_missing_table(exc):
            raise
        result = await _project_form_one_by_one(db)
    # The old handler's key order.
    return json_response({key: result[key] for key in ("projectTypes", "statuses", "customers", "items", "units",
                                                       "users", "roles", "tasks", "taskCategories", "itemStatuses",
                                                       "taskDataDefinitions")})  # fmt: skip


async def _project_form_one_by_one(db: Database) -> dict[str, Any]:
    async with db.connection() as conn, conn.cursor() as cur:
        result: dict[str, Any] = {"units": await select_units(cur)}
        for key, sql in zip(PROJECT_FORM_KEYS[:-1], PROJECT_FORM_SQL[2:-1], strict=True):
            result[key] = await rows(cur, sql)
        try:
            result["taskDataDefinitions"] = await rows(cur, SELECT_DEFINITIONS)
        except pymysql.err.MySQLError as exc:
            if not inputs.is_missing_table(exc):
                raise
            result["taskDataDefinitions"] = []
    return result


async def list_definitions(request: Request) -> Response:
    await request.state.guard.require(request, None)
    return json_response(await inputs.rows_or_empty(request.state.db.fetch_all(SELECT_DEFINITIONS)))


async def create_definition(request: Request) -> Response:
    await request.state.guard.require(request, None)
    body = await read_object(request)
    label = inputs.text(body, "label")
    key = inputs.text(body, "key")
    value_type = inputs.text(body, "valueType" if body.get("valueType") is not None else "value_type") or "varchar"
    if not label:
        raise ApiError(400, "label is required")
    if not key:
        key = derive_key(label)
    db: Database = request.state.db
    try:
        async with db.transaction() as cur:
            await cur.execute(
                "INSERT INTO task_data_definitions (`key`, label, value_type) VALUES (%s, %s, %s)",
                (key, label, value_type),
            )
            new_id = int(cur.lastrowid)
    except pymysql.err.MySQLError as exc:
        if inputs.error_code(exc) == inputs.ER_DUP_ENTRY:
            existing = await db.fetch_one(
                "SELECT id, `key`, label, value_type AS valueType FROM task_data_definitions "
                "WHERE `key` = %s OR label = %s LIMIT 1",
                (key, label),
            )
            if existing is None:
                raise
            return json_response(existing, 200)
        mapped = inputs.data_error(exc)
        if mapped is None:
            raise
        raise mapped from None
    return json_response({"id": new_id, "key": key, "label": label, "valueType": value_type}, 201)


async def task_categories(request: Request) -> Response:
    await request.state.guard.require(request, None)
    return json_response(await select_task_categories(request.state.db))


async def select_task_categories(db: Database) -> list[Row]:
    return await db.fetch_all("SELECT id, name FROM ref_task_category ORDER BY name")


async def item_categories(request: Request) -> Response:
    await request.state.guard.require(request, None)
    code = query_value(request, "projectTypeCode")
    db: Database = request.state.db
    type_id: Any = None
    if code:
        row = await db.fetch_one("SELECT id FROM ref_project_types WHERE code = %s LIMIT 1", (code,))
        type_id = row["id"] if row else None
    result = await db.fetch_all(
        "SELECT id, label FROM ref_item_category "
        "WHERE (%s IS NULL OR project_specific_id = %s OR project_specific_id IS NULL) ORDER BY label",
        (type_id, type_id),
    )
    return json_response(result)


# --- queries ----------------------------------------------------------------------------------------------------

SELECT_DEFINITIONS = "SELECT id, `key`, label, value_type AS valueType FROM task_data_definitions ORDER BY label"

# The project form's parts, in the order the old handler read them, after whether the older `units` table exists
# (then read first, as before) and `ref_unit_types` (the schema's own).
PROJECT_FORM_KEYS = (
    "projectTypes", "statuses", "customers", "items", "users", "roles", "tasks", "taskCategories", "itemStatuses",
    "taskDataDefinitions",
)  # fmt: skip
PROJECT_FORM_SQL = (
    "SELECT 1 AS present FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = 'units'",
    "SELECT id, name FROM ref_unit_types ORDER BY name",
    "SELECT id, code, label FROM ref_project_types ORDER BY label",
    "SELECT id, label FROM ref_project_status ORDER BY id",
    "SELECT id, name FROM customers ORDER BY name",
    "SELECT id, name FROM ref_item_types ORDER BY name",
    "SELECT ID AS id, CONCAT(first_name, ' ', last_name) AS fullName FROM users ORDER BY fullName",
    "SELECT id, label FROM ref_project_roles ORDER BY label",
    "SELECT t.id, t.description, t.category_id AS categoryId, c.name AS categoryName "
    "FROM tasks t LEFT JOIN ref_task_category c ON c.id = t.category_id ORDER BY t.id",
    "SELECT id, name FROM ref_task_category ORDER BY name",
    "SELECT id, label, label AS name FROM ref_item_status ORDER BY id",
    SELECT_DEFINITIONS,
)
PROJECT_FORM_SNAPSHOT = tuple((sql, None) for sql in PROJECT_FORM_SQL)


async def rows(cur: Any, sql: str) -> list[Row]:
    await cur.execute(sql)
    return list(await cur.fetchall())


async def select_units(cur: Any) -> list[Row]:
    """`units` (name, or label on older schemas), else `ref_unit_types`; an empty result also reads
    `ref_unit_types` (contract-core §6 L1, steps 1-5)."""
    try:
        try:
            found = await rows(cur, "SELECT id, name FROM units ORDER BY name")
        except pymysql.err.MySQLError as exc:
            if inputs.error_code(exc) != inputs.ER_BAD_FIELD_ERROR:
                raise
            found = await rows(cur, "SELECT id, label AS name FROM units ORDER BY label")
    except pymysql.err.MySQLError as exc:
        if not inputs.is_missing_table(exc):
            raise
        found = []
    if not found:
        found = await rows(cur, PROJECT_FORM_SQL[1])
    return found
