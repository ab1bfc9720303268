"""The request guard every protected route uses: token -> principal, role checks, revocation.

The token is verified locally with the shared secret (no call to another service). Then the user's current
`is_active` and `system_role` are read from the database, cached in-process for at most `ttl_s` (30 s, fix 3 of
the spec): a deactivated, deleted or demoted user loses access within that window rather than at token expiry.
Concurrent misses for one user share one query.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from starlette.requests import HTTPConnection

from ccsm_core.db import Database
from ccsm_core.errors import ApiError
from ccsm_core.keyspace import Keyspace
from ccsm_core.tokens import TokenError, TokenService, TokenSubjectError, bearer_token

ADMIN = 1
EMPLOYEE = 2
CUSTOMER = 3
ADMIN_ONLY = frozenset({ADMIN})
STAFF = frozenset({ADMIN, EMPLOYEE})

REVOCATION_TTL_S = 30.0
log = logging.getLogger("ccsm.guard")


@dataclass(frozen=True, slots=True)
class Principal:
    id: int
    role: int | None
    login: str

    @property
    def is_admin(self) -> bool:
        return self.role == ADMIN


@dataclass(frozen=True, slots=True)
class UserState:
    is_active: bool
    role: int | None


async def _load_user_state(db: Database, user_id: int) -> UserState | None:
    row = await db.fetch_one("SELECT is_active, system_role FROM users WHERE id = %s", (user_id,))
    if row is None:
        return None
    role = row["system_role"]
    return UserState(is_active=bool(row["is_active"]), role=int(role) if role is not None else None)


class UserStateCache:
    """`user id -> (is_active, role)` for at most `ttl_s`; single flight per user on a miss."""

    def __init__(self, db: Database, ttl_s: float = REVOCATION_TTL_S) -> None:
        self.db = db
        self.ttl_s = ttl_s
        self._entries: dict[int, tuple[float, UserState | None]] = {}
        self._inflight: dict[int, asyncio.Future[UserState | None]] = {}

    def forget(self, user_id: int) -> None:
        self._entries.pop(user_id, None)

    async def get(self, user_id: int) -> UserState | None:
        now = time.monotonic()
        hit = self._entries.get(user_id)
        if hit is not None and hit[0] > now:
            return hit[1]
        pending = self._inflight.get(user_id)
        if pending is not None:
            return await asyncio.shield(pending)
        fut: asyncio.Future[UserState | None] = asyncio.get_running_loop().create_future()
        self._inflight[user_id] = fut
        try:
            state = await _load_user_state(self.db, user_id)
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # retrieved here so a future without waiters does not log
            raise
        finally:
            self._inflight.pop(user_id, None)
        if len(self._entries) > 50_000:
            self._entries.clear()
        self._entries[user_id] = (now + self.ttl_s, state)
        fut.set_result(state)
        return state


class Guard:
    def __init__(self, tokens: TokenService, users: UserStateCache, auth_required: bool) -> None:
        self.tokens = tokens
        self.users = users
        self.auth_required = auth_required

    async def authenticate(self, conn: HTTPConnection) -> Principal | None:
        """The caller, or None when auth is off (local only; the old backend's AUTH_REQUIRED=false)."""
        if not self.auth_required:
            return None
        token = bearer_token(conn.headers.get("authorization"))
        if token is None:
            raise ApiError(401, "Missing bearer token")
        try:
            claims = self.tokens.verify(token)
        except TokenSubjectError:
            raise ApiError(401, "Invalid token") from None
        except TokenError:
            raise ApiError(401, "Invalid or expired token") from None
        state = await self.users.get(claims.sub)
        if state is None or not state.is_active:
            raise ApiError(401, "Invalid or expired token")
        # The role is the user's current one, not the one frozen in the token (fix 3).
        return Principal(id=claims.sub, role=state.role, login=claims.login)

    async def require(self, conn: HTTPConnection, roles: frozenset[int] | None = None) -> Principal | None:
        principal = await self.authenticate(conn)
        if principal is not None and roles is not None and principal.role not in roles:
            raise ApiError(403, "Forbidden")
        return principal


def guard_of(conn: HTTPConnection) -> Guard:
    guard: Guard = conn.state.guard
    return guard


async def publish_revocation(keyspace: Keyspace, user_id: int) -> None:
    """Tell every process that `user_id` was deactivated, deleted or had its role changed: guards drop their
    cached state for it and gateways close its sockets (4401). Best effort: the 30 s cache bounds it anyway."""
    try:
        await keyspace.client.publish(keyspace.revocations_channel, str(user_id))
    except Exception as exc:
        log.warning("revocation publish failed", extra={"userId": user_id, "error": type(exc).__name__})
