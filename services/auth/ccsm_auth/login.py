"""`POST /api/login` (contract-core §3 A1) and `POST /api/desktop/login-authcode` (contract-work §4 D1).

Kept: request and response shapes, status codes and error strings (the login page shows them); `role`,
`system_role` and `id` as JSON numbers; a `first_name`/`last_name`/`role` key left out when the column is NULL
(A1, as `res.json` dropped undefined); `expiresIn` as the raw `JWT_EXPIRES_IN` text; all three token fields null
when no secret is configured; `null` (200) for an unknown or inactive auth code; legacy plaintext rows upgraded
after a successful web login (the UPDATE fires db-changed, as the old pool-query hook did).

Fixed:
- fix 3: web login refuses inactive users with the same 401 body as a wrong password.
- fix 4: both endpoints are rate-limited per account and per client IP (limits.py); unknown user, wrong password
  and inactive user answer the same body, status and time (passwords.py: dummy hash and a timing floor).
- fix 8: the password is trimmed (JS `trim`) like POST/PUT /api/users trim it before hashing. A hash the old
  login wrote for an untrimmed legacy password still matches: when the trimmed password fails and differs from
  the submitted one, the submitted one is tried too. The username is trimmed the same way.
- fix 1: `username`/`password` that are not strings (objects, numbers, arrays) are 400 "Username and password
  are required" instead of reaching SQL (core bug 9) or bcryptjs (which threw: 500). A body that is not a JSON
  object reads as `{}`, as it did.
- Audit: every outcome is one `auth.*` log event with the user id (when known), client IP and reason; never a
  password, token or auth code, and never a submitted name that matched no user (it may be a mistyped password).
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ccsm_auth.limits import LoginLimiter, RateLimited, Slot, fold_name
from ccsm_auth.passwords import Passwords
from ccsm_core.codec import json_response, read_json
from ccsm_core.db import Database, Row
from ccsm_core.errors import ApiError
from ccsm_core.params import js_trim, normalize_string
from ccsm_core.settings import Settings
from ccsm_core.tokens import TokenService

audit = logging.getLogger("ccsm.audit")
log = logging.getLogger("ccsm.auth")

REQUIRED = "Username and password are required"
INVALID = "Invalid username or password"
CODE_REQUIRED = "code is required"


def _event(name: str, level: int = logging.INFO, **fields: Any) -> None:
    audit.log(level, name, extra={"event": name, **fields})


def _js_truthy(value: Any) -> bool:
    """`!value` in JS: missing, null, false, 0, NaN and "" are falsy; objects and arrays (even empty) are not."""
    if value is None or value is False:
        return False
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value == value and value != 0
    if isinstance(value, str):
        return value != ""
    return True


def _token_fields(tokens: TokenService, settings: Settings, user_id: int, role: int | None, login: str) -> Row:
    if not settings.tokens_enabled:
        return {"accessToken": None, "tokenType": None, "expiresIn": None}
    return {
        "accessToken": tokens.issue(user_id, role, login),
        "tokenType": "Bearer",
        "expiresIn": settings.jwt_expires_in,
    }


def _name_ref(name: str) -> str:
    """A stable, non-reversible reference to a submitted name, to correlate failures in the audit log."""
    return hashlib.sha256(fold_name(name).encode("utf-8", "surrogatepass")).hexdigest()[:12]


# --- POST /api/login --------------------------------------------------------------------------------------------


async def login(request: Request) -> Response:
    body = await read_json(request)
    if not isinstance(body, dict):
        body = {}
    username, password = body.get("username"), body.get("password")
    if not (_js_truthy(username) and _js_truthy(password)):
        raise ApiError(400, REQUIRED)
    if not isinstance(username, str) or not isinstance(password, str):
        raise ApiError(400, REQUIRED)
    name, trimmed = js_trim(username), js_trim(password)
    if not name or not trimmed:
        raise ApiError(400, REQUIRED)
    candidates = [trimmed] if trimmed == password else [trimmed, password]

    state = request.state
    settings: Settings = state.settings
    limiter: LoginLimiter = state.login_limiter
    passwords: Passwords = state.passwords
    ip = state.proxies.client_ip(request.scope)

    slots: list[Slot] = []
    failed = False
    try:
        try:
            row = None
            slots.append(await limiter.reserve(limiter.ip_key("login", ip), limiter.limits.ip, "ip"))
            row = await select_user_by_login(state.db, name)
            account = f"user:{row['id']}" if row else f"name:{fold_name(name)}"
            slots.append(
                await limiter.reserve(limiter.account_key("login", account), limiter.limits.account, "account")
            )
        except RateLimited as exc:
            failed = True
            _event(
                "auth.login.rate_limited",
                logging.WARNING,
                endpoint="login",
                scope=exc.scope,
                ip=ip,
                userId=row["id"] if row is not None else None,
                retryAfter=exc.retry_after,
            )
            raise

        stored = str(row["password"]) if row is not None and row["password"] is not None else None
        result = await passwords.verify(candidates, stored if row is not None else None)
        reason = None
        if row is None:
            reason = "unknown_user"
        elif not result.ok:
            reason = "bad_password"
        elif not row["is_active"]:
            reason = "inactive"
        if reason is not None:
            failed = True
            await passwords.pad_failure(len(candidates), result.spent_s)
            _event(
                "auth.login.failed",
                endpoint="login",
                reason=reason,
                ip=ip,
                userId=row["id"] if row is not None else None,
                nameRef=None if row is not None else _name_ref(name),
            )
            raise ApiError(401, INVALID)

        assert row is not None
        assert stored is not None
        assert result.matched is not None
        user_id = int(row["id"])
        if passwords.needs_rehash(stored):
            await _upgrade(state.db, passwords, user_id, stored, result.matched, result.scheme)
        role = int(row["system_role"]) if row["system_role"] is not None else None
        out: Row = {"id": user_id}
        for key in ("first_name", "last_name"):
            if row[key] is not None:
                out[key] = row[key]
        if role is not None:
            out["role"] = role
        out.update(_token_fields(state.tokens, settings, user_id, role, str(row["login"])))
        _event("auth.login.succeeded", endpoint="login", ip=ip, userId=user_id, role=role, scheme=result.scheme)
        return json_response(out)
    finally:
        if not failed:
            await limiter.refund(slots)


async def _upgrade(db: Database, passwords: Passwords, user_id: int, stored: str, password: str, old: str) -> None:
    """Rehash to the configured scheme after a successful login. A failure is logged and the login still
    succeeds, as in the old backend. The UPDATE only applies if the row still holds the hash we verified, so a
    password changed meanwhile is never overwritten."""
    try:
        new_hash = await passwords.hash(password)
        changed = await update_password(db, user_id, new_hash, stored)
    except Exception as exc:
        _event("auth.password.upgrade_failed", logging.WARNING, userId=user_id, error=type(exc).__name__)
        return
    if changed:
        _event("auth.password.upgraded", userId=user_id, fromScheme=old, toScheme=passwords.scheme)


# --- POST /api/desktop/login-authcode ---------------------------------------------------------------------------


async def login_authcode(request: Request) -> Response:
    body = await read_json(request)
    if not isinstance(body, dict):
        body = {}
    code = normalize_string(body.get("code"))
    if not code:
        raise ApiError(400, CODE_REQUIRED)

    state = request.state
    limiter: LoginLimiter = state.login_limiter
    ip = state.proxies.client_ip(request.scope)
    slots: list[Slot] = []
    failed = False
    try:
        try:
            slots.append(await limiter.reserve(limiter.ip_key("authcode", ip), limiter.limits.ip, "ip"))
            code_key = limiter.account_key("authcode", fold_name(code))
            slots.append(await limiter.reserve(code_key, limiter.limits.account, "account"))
        except RateLimited as exc:
            failed = True
            _event(
                "auth.login.rate_limited",
                logging.WARNING,
                endpoint="authcode",
                scope=exc.scope,
                ip=ip,
                retryAfter=exc.retry_after,
            )
            raise
        row = await select_active_user_by_authcode(state.db, code)
        if row is None:
            failed = True
            _event("auth.login.failed", endpoint="authcode", reason="unknown_or_inactive_code", ip=ip)
            return json_response(None)
        user_id = int(row["id"])
        role = int(row["system_role"]) if row["system_role"] is not None else None
        out: Row = {
            "id": user_id,
            "first_name": row["first_name"],
            "last_name": row["last_name"],
            "login": row["login"],
            "system_role": role,
        }
        out.update(_token_fields(state.tokens, state.settings, user_id, role, str(row["login"])))
        _event("auth.login.succeeded", endpoint="authcode", ip=ip, userId=user_id, role=role)
        return json_response(out)
    finally:
        if not failed:
            await limiter.refund(slots)


# --- queries ----------------------------------------------------------------------------------------------------


async def select_user_by_login(db: Database, login: str) -> Row | None:
    return await db.fetch_one(
        "SELECT id, first_name, last_name, login, password, system_role, is_active FROM users WHERE login = %s LIMIT 1",
        (login,),
    )


async def select_active_user_by_authcode(db: Database, code: str) -> Row | None:
    return await db.fetch_one(
        "SELECT id, first_name, last_name, login, system_role FROM users WHERE authcode = %s AND is_active = 1 LIMIT 1",
        (code,),
    )


async def update_password(db: Database, user_id: int, new_hash: str, expected: str) -> bool:
    affected = await db.execute(
        # utf8mb4_bin: the column's own collation is case-insensitive, the compare-and-set must not be
        "UPDATE users SET password = %s WHERE id = %s AND password COLLATE utf8mb4_bin = %s",
        (new_hash, user_id, expected),
    )
    return affected > 0
