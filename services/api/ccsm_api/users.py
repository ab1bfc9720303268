"""`/api/users` (admin only): contract-core §4 (U1-U5).

Kept: the response shapes, messages and order of checks; `authcode` stays in the admin-only list because the web
UsersPage edits it and sends it back on every PUT (removing it would make every edit fail "All fields are
required"; core bug 2 is mitigated by the admin-only guard, which is now enforced by default).
Fixed: an omitted `is_active`/`is_ccs` on PUT leaves the stored flag unchanged (core 13); PUT checks that the
user exists before the duplicate check (core 23: 404, not 409, for an unknown id); duplicate races are caught by
the unique keys (409, not 500); an unknown role, a referenced user or an oversized value is a 4xx, not a 500;
passwords longer than 72 bytes are truncated like bcryptjs did instead of failing. A deactivated, deleted or
re-roled user is revoked at once across processes (fix 3).

Issue 12: a new or changed `authcode` shorter than `AUTHCODE_MIN_LENGTH` is a 400 (item 1; an unchanged short
code may be sent back, as the UsersPage does on every edit, so other fields stay editable until the codes are
rotated). A change of password or auth code, a deactivation and a role change revoke every token the user holds
(item 4): `users.tokens_revoked_at` is written in the same transaction (durable: the API guard and the gateway
read it), written again right after the commit (so a login that read the old credential while the change was
committing is covered too), and published (every process drops its cached state, gateways close the sockets).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any

import bcrypt
import pymysql
from starlette.requests import Request
from starlette.responses import Response

from ccsm_api import inputs
from ccsm_api.inputs import SqlNumber
from ccsm_core import authcodes
from ccsm_core.codec import json_response, read_object
from ccsm_core.db import Database, Row
from ccsm_core.errors import ApiError
from ccsm_core.guard import (
    ADMIN_ONLY,
    RECORD_REVOCATION_SQL,
    publish_revocation,
    record_revocation,
    revocation_params,
    revocation_retention_s,
)
from ccsm_core.params import js_number, to_flag
from ccsm_core.settings import Settings

log = logging.getLogger("ccsm.api.users")

REQUIRED = ("first_name", "last_name", "email", "login", "password", "authcode")
DUPLICATE = "User with same login/email/authcode exists"
BCRYPT_MAX_BYTES = 72


def hash_password(plain: str, rounds: int) -> str:
    """bcrypt as bcryptjs wrote it: `$2a$` prefix, input cut to its first 72 UTF-8 bytes (contract-core §8.3),
    so the old backend can still verify every hash after a rollback."""
    secret = plain.encode("utf-8")[:BCRYPT_MAX_BYTES]
    return bcrypt.hashpw(secret, bcrypt.gensalt(rounds=rounds, prefix=b"2a")).decode("ascii")


def _role(body: dict[str, Any]) -> SqlNumber:
    n = js_number(body.get("system_role"))
    if not math.isfinite(n):
        raise ApiError(400, "system_role must be a number")
    return inputs.sql_number(n)


def _write_error(exc: pymysql.err.MySQLError) -> ApiError | None:
    code = inputs.error_code(exc)
    if code == inputs.ER_DUP_ENTRY:
        return ApiError(409, DUPLICATE)
    if code in (inputs.ER_NO_REFERENCED_ROW, inputs.ER_NO_REFERENCED_ROW_2):
        return ApiError(400, "Unknown system_role")
    return inputs.data_error(exc)


def _now_ms() -> int:
    return int(time.time() * 1000)


async def _revoke(request: Request, user_id: int, recorded: bool = False) -> None:
    """After the commit: every process forgets the user's cached state, gateways close its sockets. `recorded`:
    the transaction wrote `tokens_revoked_at`; it is moved to this instant, past the commit, so that a login whose
    read of the old credential overlapped the commit is refused too."""
    instant_ms = _now_ms()
    if recorded:
        try:
            await request.state.db.execute(RECORD_REVOCATION_SQL, revocation_params(user_id, instant_ms))
        except Exception as exc:  # committed already, with the instant written in the transaction: answer 200
            log.warning(
                "revocation instant not moved past the commit", extra={"userId": user_id, "error": type(exc).__name__}
            )
    request.state.guard.users.forget(user_id)
    retention_s = revocation_retention_s(request.state.settings.jwt_expires_seconds)
    await publish_revocation(request.state.keyspace, user_id, retention_s, instant_ms)


# --- handlers ---------------------------------------------------------------------------------------------------


async def list_users(request: Request) -> Response:
    await request.state.guard.require(request, ADMIN_ONLY)
    return json_response(await inputs.rows_or_empty(select_users(request.state.db)))


async def list_roles(request: Request) -> Response:
    await request.state.guard.require(request, ADMIN_ONLY)
    return json_response(await inputs.rows_or_empty(select_roles(request.state.db)))


async def create_user(request: Request) -> Response:
    await request.state.guard.require(request, ADMIN_ONLY)
    body = await read_object(request)
    values = {name: inputs.text(body, name) for name in REQUIRED}
    if any(not v for v in values.values()) or body.get("system_role") is None:
        raise ApiError(400, "All fields are required")
    role = _role(body)
    settings: Settings = request.state.settings
    authcodes.check_length(values["authcode"], settings.authcode_min_length)
    is_active = to_flag(body.get("is_active"))
    is_ccs = to_flag(body.get("is_ccs"))
    # bcrypt runs off the event loop and before any connection is taken.
    hashed = await asyncio.to_thread(hash_password, values["password"], settings.bcrypt_rounds)
    db: Database = request.state.db
    try:
        async with db.transaction() as cur:
            if await find_clash(cur, values["login"], values["email"], values["authcode"], None):
                raise ApiError(409, DUPLICATE)
            new_id = await insert_user(cur, values, hashed, role, is_active, is_ccs)
    except pymysql.err.MySQLError as exc:
        mapped = _write_error(exc)
        if mapped is None:
            raise
        raise mapped from None
    return json_response(
        {
            "id": new_id,
            "first_name": values["first_name"],
            "last_name": values["last_name"],
            "email": values["email"],
            "login": values["login"],
            "system_role": role,
            "is_active": is_active,
            "is_ccs": is_ccs,
        },
        201,
    )


def _flag_or_keep(body: dict[str, Any], name: str, current: Any) -> int:
    if body.get(name) is None:  # omitted (or null): unchanged, fix 8 / core 13
        return int(current)
    return to_flag(body[name])


async def update_user(request: Request) -> Response:
    await request.state.guard.require(request, ADMIN_ONLY)
    user_id = inputs.finite_id(request.path_params["id"], "Invalid user id")
    body = await read_object(request)
    values = {name: inputs.text(body, name) for name in REQUIRED}
    password = values.pop("password")
    if any(not v for v in values.values()) or body.get("system_role") is None:
        raise ApiError(400, "All fields are required")
    role = _role(body)
    settings: Settings = request.state.settings
    hashed = await asyncio.to_thread(hash_password, password, settings.bcrypt_rounds) if password else None
    db: Database = request.state.db
    try:
        async with db.transaction() as cur:
            current = await lock_user(cur, user_id)
            if current is None:
                raise ApiError(404, "User not found")
            code_changed = values["authcode"] != current["authcode"]
            if code_changed:
                authcodes.check_length(values["authcode"], settings.authcode_min_length)
            if await find_clash(cur, values["login"], values["email"], values["authcode"], user_id):
                raise ApiError(409, DUPLICATE)
            is_active = _flag_or_keep(body, "is_active", current["is_active"])
            is_ccs = _flag_or_keep(body, "is_ccs", current["is_ccs"])
            await update_user_row(cur, user_id, values, hashed, role, is_active, is_ccs)
            credential_changed = hashed is not None or code_changed
            revoked = credential_changed or (current["is_active"] and not is_active) or role != current["system_role"]
            if revoked:
                await record_revocation(cur, int(current["id"]), _now_ms())
    except pymysql.err.MySQLError as exc:
        mapped = _write_error(exc)
        if mapped is None:
            raise
        raise mapped from None
    stored_id = int(current["id"])
    request.state.guard.users.forget(stored_id)
    if revoked:
        await _revoke(request, stored_id, recorded=True)
    return json_response(
        {
            "id": user_id,
            "first_name": values["first_name"],
            "last_name": values["last_name"],
            "email": values["email"],
            "login": values["login"],
            "system_role": role,
            "is_active": is_active,
            "is_ccs": is_ccs,
        }
    )


async def delete_user(request: Request) -> Response:
    await request.state.guard.require(request, ADMIN_ONLY)
    user_id = inputs.finite_id(request.path_params["id"], "Invalid user id")
    db: Database = request.state.db
    try:
        deleted = await db.execute("DELETE FROM users WHERE id = %s", (user_id,))
    except pymysql.err.IntegrityError as exc:
        if inputs.error_code(exc) in (inputs.ER_ROW_IS_REFERENCED, inputs.ER_ROW_IS_REFERENCED_2):
            raise ApiError(409, "User is referenced by other records") from None
        raise
    if deleted == 0:
        raise ApiError(404, "User not found")
    if isinstance(user_id, int):
        await _revoke(request, user_id)
    return json_response({"success": True})


# --- queries ----------------------------------------------------------------------------------------------------


async def select_users(db: Database) -> list[Row]:
    return await db.fetch_all(
        "SELECT id, first_name, last_name, email, login, authcode, system_role, is_active, is_ccs "
        "FROM users ORDER BY id"
    )


async def select_roles(db: Database) -> list[Row]:
    return await db.fetch_all("SELECT id, name, label FROM ref_system_roles ORDER BY id")


async def find_clash(cur: Any, login: str, email: str, authcode: str, exclude_id: SqlNumber | None) -> bool:
    if exclude_id is None:
        await cur.execute(
            "SELECT id FROM users WHERE login = %s OR email = %s OR authcode = %s LIMIT 1", (login, email, authcode)
        )
    else:
        await cur.execute(
            "SELECT id FROM users WHERE (login = %s OR email = %s OR authcode = %s) AND id <> %s LIMIT 1",
            (login, email, authcode, exclude_id),
        )
    return await cur.fetchone() is not None


async def insert_user(
    cur: Any, values: dict[str, str], hashed: str, role: SqlNumber, is_active: int, is_ccs: int
) -> int:
    await cur.execute(
        "INSERT INTO users (first_name, last_name, email, login, password, authcode, system_role, is_active, is_ccs) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (
            values["first_name"],
            values["last_name"],
            values["email"],
            values["login"],
            hashed,
            values["authcode"],
            role,
            is_active,
            is_ccs,
        ),
    )
    return int(cur.lastrowid)


async def lock_user(cur: Any, user_id: SqlNumber) -> Row | None:
    await cur.execute(
        "SELECT id, is_active, is_ccs, system_role, authcode FROM users WHERE id = %s FOR UPDATE", (user_id,)
    )
    row: Row | None = await cur.fetchone()
    return row


async def update_user_row(
    cur: Any,
    user_id: SqlNumber,
    values: dict[str, str],
    hashed: str | None,
    role: SqlNumber,
    is_active: int,
    is_ccs: int,
) -> None:
    if hashed is None:
        await cur.execute(
            "UPDATE users SET first_name = %s, last_name = %s, email = %s, login = %s, authcode = %s, "
            "system_role = %s, is_active = %s, is_ccs = %s WHERE id = %s",
            (
                values["first_name"],
                values["last_name"],
                values["email"],
                values["login"],
                values["authcode"],
                role,
                is_active,
                is_ccs,
                user_id,
            ),
        )
    else:
        await cur.execute(
            "UPDATE users SET first_name = %s, last_name = %s, email = %s, login = %s, password = %s, "
            "authcode = %s, system_role = %s, is_active = %s, is_ccs = %s WHERE id = %s",
            (
                values["first_name"],
                values["last_name"],
                values["email"],
                values["login"],
                hashed,
                values["authcode"],
                role,
                is_active,
                is_ccs,
                user_id,
            ),
        )
