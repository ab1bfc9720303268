"""`/api/customers` (admin and employee): contract-core §5 (C1-C4).

Kept: shapes, messages, the order of checks and the roles (employees may create, edit and delete customers).
Fixed: an object/array field or an oversized value is a 400, and deleting a customer that projects still refer
to is a 409 `{"error": ...}`, where the old backend answered 500.
"""

from __future__ import annotations

from typing import Any

import pymysql
from starlette.requests import Request
from starlette.responses import Response

from ccsm_api import inputs
from ccsm_api.inputs import SqlNumber
from ccsm_core.codec import json_response, read_object
from ccsm_core.db import Database, Row
from ccsm_core.errors import ApiError
from ccsm_core.guard import STAFF

FIELDS = ("name", "state", "county", "contact_name", "contact_email", "contact_phone")


async def _read_fields(request: Request) -> dict[str, str]:
    body = await read_object(request)
    values = {name: inputs.text(body, name) for name in FIELDS}
    if any(not v for v in values.values()):
        raise ApiError(400, "All fields are required")
    return values


def _mapped(exc: pymysql.err.MySQLError) -> ApiError | None:
    if inputs.error_code(exc) in (inputs.ER_ROW_IS_REFERENCED, inputs.ER_ROW_IS_REFERENCED_2):
        return ApiError(409, "Customer is referenced by projects")
    return inputs.data_error(exc)


async def list_customers(request: Request) -> Response:
    await request.state.guard.require(request, STAFF)
    return json_response(await inputs.rows_or_empty(select_customers(request.state.db)))


async def create_customer(request: Request) -> Response:
    await request.state.guard.require(request, STAFF)
    values = await _read_fields(request)
    try:
        async with request.state.db.transaction() as cur:
            new_id = await insert_customer(cur, values)
    except pymysql.err.MySQLError as exc:
        mapped = _mapped(exc)
        if mapped is None:
            raise
        raise mapped from None
    return json_response({"id": new_id, **values}, 201)


async def update_customer(request: Request) -> Response:
    await request.state.guard.require(request, STAFF)
    customer_id = inputs.finite_id(request.path_params["id"], "Invalid customer id")
    values = await _read_fields(request)
    try:
        async with request.state.db.transaction() as cur:
            matched = await update_customer_row(cur, customer_id, values)
            if matched == 0:
                raise ApiError(404, "Customer not found")
    except pymysql.err.MySQLError as exc:
        mapped = _mapped(exc)
        if mapped is None:
            raise
        raise mapped from None
    return json_response({"id": customer_id, **values})


async def delete_customer(request: Request) -> Response:
    await request.state.guard.require(request, STAFF)
    customer_id = inputs.finite_id(request.path_params["id"], "Invalid customer id")
    db: Database = request.state.db
    try:
        deleted = await db.execute("DELETE FROM customers WHERE id = %s", (customer_id,))
    except pymysql.err.MySQLError as exc:
        mapped = _mapped(exc)
        if mapped is None:
            raise
        raise mapped from None
    if deleted == 0:
        raise ApiError(404, "Customer not found")
    return json_response({"success": True})


# --- queries ----------------------------------------------------------------------------------------------------


async def select_customers(db: Database) -> list[Row]:
    return await db.fetch_all(
        "SELECT id, name, state, county, contact_name, contact_email, contact_phone FROM customers ORDER BY id"
    )


async def insert_customer(cur: Any, values: dict[str, str]) -> int:
    await cur.execute(
        "INSERT INTO customers (name, state, county, contact_name, contact_email, contact_phone) "
        "VALUES (%s, %s, %s, %s, %s, %s)",
        tuple(values[name] for name in FIELDS),
    )
    return int(cur.lastrowid)


async def update_customer_row(cur: Any, customer_id: SqlNumber, values: dict[str, str]) -> int:
    matched: int = await cur.execute(
        "UPDATE customers SET name = %s, state = %s, county = %s, contact_name = %s, contact_email = %s, "
        "contact_phone = %s WHERE id = %s",
        (*(values[name] for name in FIELDS), customer_id),
    )
    return matched
