"""`POST /api/login` (contract-core §3 A1) and `POST /api/desktop/login-authcode` (contract-work §4 D1).

Kept: request and response shapes, status codes and error strings (the login page shows them); `role`,
`system_role` and `id` as JSON numbers; a `first_name`/`last_name`/`role` key left out when the column is NULL
(A1, as `res.json` dropped undefined); `expiresIn` as the raw `JWT_EXPIRES_IN` text; all three token fields null
when no secret is configured; `null` (200) for an unknown or inactive auth code; legacy plaintext rows upgraded
after a successful web login (the UPDATE fires db-changed, as the old pool-query hook did).

Fixed:
- fix 3: web login refuses inactive users with the same 401 body as a wrong password.
- fix 4: both endpoints are rate-limited (limits.py): per client address; the web login per (account, address)
  with a larger per-account budget, the code login with a budget across all clients (issue 12 items 1, 3, 10);
  unknown user, wrong password and inactive user answer the same body, status and time (passwords.py: dummy
  hash and a timing floor).
- issue 12 item 1: a token from the code login carries `scope: desktop` and is valid only on `/api/desktop/*`
  and `/ws/desktop` (tokens.py, guard.py). Item 4: a token's issue instant is the moment the user's row was read,
  so a revocation committed after that read covers it (`users.tokens_revoked_at`).
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
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ccsm_auth.limits import LoginLimiter, RateLimited, Slot
from ccsm_auth.passwords import Passwords
from ccsm_core.codec import json_response, read_json
from ccsm_core.db import Database, Row
from ccsm_core.errors import ApiError
from ccsm_core.params import js_trim, normalize_string
from ccsm_core.settings import Settings
from ccsm_core.tokens import DESKTOP_SCOPE, TokenService

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


def _token_fields(
    tokens: TokenService,
    settings: Settings,
    row: Row,
    role: int | None,
    read_at: float,
    scope: str | None = None,
) -> Row:
    if not settings.tokens_enabled:
        return {"accessToken": None, "tokenType": None, "expiresIn": None}
    return {
        "accessToken": tokens.issue(int(row["id"]), role, str(row["login"]), now=read_at, scope=scope),
        "tokenType": "Bearer",
        "expiresIn": settings.jwt_expires_in,
    }


def _name_ref(weight: bytes) -> str:
    """A stable, non-reversible reference to a submitted name, to correlate failures in the audit log."""
    return hashlib.sha256(weight).hexdigest()[:12]


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
        limits = limiter.limits
        row: Row | None = None
        try:
            slots.append(await limiter.reserve(limiter.ip_key("login", ip), limits.ip, "ip"))
            # The account's counters follow the name as the database compares it, whether a row exists or not.
            weight = await select_login_weight(state.db, name)
            read_at = time.time()  # the token's issue instant: before the credential it rests on is read
            row = await select_user_by_login(state.db, name)
            account = "login:" + weight.hex()
            pair_key = limiter.account_address_key("login", account, ip)
            pair = await limiter.reserve(pair_key, limits.account_address, "account")
            slots.append(pair)
            account_key = limiter.account_key("login", account)
            slots.append(await limiter.reserve_budget(account_key, limits.account, "account", pair))
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
            state.metrics.login_failed("login")
            _event(
                "auth.login.failed",
                endpoint="login",
                reason=reason,
                ip=ip,
                userId=row["id"] if row is not None else None,
                nameRef=None if row is not None else _name_ref(weight),
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
        out.update(_token_fields(state.tokens, settings, row, role, read_at))
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
            address = await limiter.reserve(limiter.ip_key("authcode", ip), limiter.limits.ip, "ip")
            slots.append(address)
            # Every client's failed codes: the budget that holds against guessing from many addresses (item 1).
            budget = limiter.limits.authcode_global
            slots.append(await limiter.reserve_budget(limiter.global_key("authcode"), budget, "global", address))
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
        read_at = time.time()
        row = await select_active_user_by_authcode(state.db, code)
        if row is None:
            failed = True
            state.metrics.login_failed("authcode")
            # The event the CloudFormation metric filter counts (detection, item 1): never the code.
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
        out.update(_token_fields(state.tokens, state.settings, row, role, read_at, scope=DESKTOP_SCOPE))
        _event("auth.login.succeeded", endpoint="authcode", ip=ip, userId=user_id, role=role)
        return json_response(out)
    finally:
        if not failed:
            await limiter.refund(slots)


# --- queries ----------------------------------------------------------------------------------------------------


# The submitted name's weight string in the users.login column's own collation, whatever the database has: in
# the UNION the column (implicit collation) outranks the literal (coercible), so the derived column carries the
# column's collation (MySQL reference manual, "Collation Coercibility in Expressions"). Two rows come back: the
# name's weights, then a space's, so that trailing pad spaces can be dropped (PAD SPACE collations ignore them in
# comparisons, but WEIGHT_STRING keeps them).
LOGIN_WEIGHT_SQL = (
    "SELECT part, WEIGHT_STRING(name) AS weight FROM ("
    "SELECT 0 AS part, login AS name FROM users WHERE FALSE "
    "UNION ALL SELECT 1, %s UNION ALL SELECT 2, ' '"
    ") AS submitted ORDER BY part"
)


async def select_login_weight(db: Database, name: str) -> bytes:
    """Equal for two names exactly when `WHERE login = name` cannot tell them apart (issue 12 item 10)."""
    rows = await db.fetch_all(LOGIN_WEIGHT_SQL, (name,))
    weight, space = (bytes(r["weight"] or b"") for r in rows)
    while space and weight.endswith(space):
        weight = weight[: -len(space)]
    return weight


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
