"""The request guard every protected route uses: token -> principal, role checks, revocation.

The token is verified locally with the shared secret (no call to another service). Then the user's current
`is_active` and `system_role` are read from the database, cached in-process for at most `ttl_s` (30 s, fix 3 of
the spec): a deactivated, deleted or demoted user loses access within that window rather than at token expiry.
Concurrent misses for one user share one query. `RevocationListener` shortens the window to the time a Redis
message takes: `publish_revocation` (api, on deactivate/delete/re-role) makes every process forget that user.

Two more refusals, both in the guard so that no route can forget them (issue 12):
- Revoked tokens (item 4): the same cached read brings `users.tokens_revoked_at`, written when the user's password
  or auth code changes, or the user is deactivated or re-roled (`record_revocation`). A token issued before it is
  refused (401 `Invalid or expired token`), and because the instant is in the database it holds after a Redis
  restart without persistence and after a process restart; reactivating a user does not clear it, so tokens from
  before the deactivation stay dead. No extra query: it comes with `is_active` and the role.
- Desktop-scoped tokens (item 1): a token from the auth-code login (`scope` claim) gets 403 `Forbidden`
  outside `/api/desktop/*` (`Claims.may_use`).
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import HTTPConnection

from ccsm_core.db import Database
from ccsm_core.errors import ApiError
from ccsm_core.fairness import acting_user
from ccsm_core.keyspace import Keyspace
from ccsm_core.tokens import LEEWAY_S, TokenError, TokenService, TokenSubjectError, bearer_token

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
    scope: str | None = None  # the token's `scope` claim: what a response cache must key on with id and role

    @property
    def is_admin(self) -> bool:
        return self.role == ADMIN


@dataclass(frozen=True, slots=True)
class UserState:
    is_active: bool
    role: int | None
    revoked_at_ms: int | None = None  # users.tokens_revoked_at in epoch ms; None: never revoked


def epoch_ms(value: dt.datetime) -> int:
    """A DATETIME read back (naive UTC wall time, as every session runs in UTC) as epoch milliseconds."""
    return calendar.timegm(value.timetuple()) * 1000 + value.microsecond // 1000


def utc_datetime(instant_ms: int) -> dt.datetime:
    """Epoch milliseconds as the naive UTC DATETIME(3) value `users.tokens_revoked_at` stores."""
    return dt.datetime.fromtimestamp(instant_ms / 1000, dt.UTC).replace(
        tzinfo=None, microsecond=instant_ms % 1000 * 1000
    )


async def _load_user_state(db: Database, user_id: int) -> UserState | None:
    row = await db.fetch_one("SELECT is_active, system_role, tokens_revoked_at FROM users WHERE id = %s", (user_id,))
    if row is None:
        return None
    role = row["system_role"]
    revoked = row.get("tokens_revoked_at")
    return UserState(
        is_active=bool(row["is_active"]),
        role=int(role) if role is not None else None,
        revoked_at_ms=epoch_ms(revoked) if isinstance(revoked, dt.datetime) else None,
    )


# Never moves the instant backwards (a clock stepped back, or two writers): a later revocation always wins.
RECORD_REVOCATION_SQL = (
    "UPDATE users SET tokens_revoked_at = GREATEST(COALESCE(tokens_revoked_at, %s), %s) WHERE id = %s"
)


def revocation_params(user_id: int, instant_ms: int) -> tuple[dt.datetime, dt.datetime, int]:
    at = utc_datetime(instant_ms)
    return at, at, user_id


async def record_revocation(cur: Any, user_id: int, instant_ms: int) -> None:
    """Write the user's revocation instant, in the caller's transaction: tokens issued before it are refused."""
    await cur.execute(RECORD_REVOCATION_SQL, revocation_params(user_id, instant_ms))


class UserStateCache:
    """`user id -> (is_active, role)` for at most `ttl_s`; single flight per user on a miss.

    The query for a miss runs in its own task that every concurrent caller awaits through `shield`: a caller
    that is cancelled (its client went away) neither cancels the query for the others nor hands them its
    CancelledError. A failed query is not cached, so the next request tries again.
    """

    def __init__(self, db: Database, ttl_s: float = REVOCATION_TTL_S, max_entries: int = 50_000) -> None:
        self.db = db
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: dict[int, tuple[float, UserState | None]] = {}
        self._inflight: dict[int, asyncio.Task[UserState | None]] = {}
        self._generation = 0

    def forget(self, user_id: int) -> None:
        self._entries.pop(user_id, None)
        # A query already in flight may have read the row before the change: its answer must not be cached.
        if user_id in self._inflight:
            self._generation += 1

    def clear(self) -> None:
        self._entries.clear()
        self._generation += 1

    async def _load(self, user_id: int) -> UserState | None:
        generation = self._generation
        started = time.monotonic()
        try:
            state = await _load_user_state(self.db, user_id)
        finally:
            self._inflight.pop(user_id, None)
        if generation == self._generation:
            if len(self._entries) >= self.max_entries:
                self._entries.clear()
            self._entries[user_id] = (started + self.ttl_s, state)
        return state

    async def get(self, user_id: int) -> UserState | None:
        hit = self._entries.get(user_id)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        task = self._inflight.get(user_id)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._load(user_id))
            # Retrieve a failure even when every waiter has gone, so asyncio never logs it as unhandled.
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
            self._inflight[user_id] = task
        return await asyncio.shield(task)


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
        if state.revoked_at_ms is not None and claims.issued_before(state.revoked_at_ms):
            raise ApiError(401, "Invalid or expired token")
        if not claims.may_use(conn.scope["path"]):
            raise ApiError(403, "Forbidden")
        acting_user.set(claims.sub)  # whose share of the database pool this request uses (ccsm_core.fairness)
        # The role is the user's current one, not the one frozen in the token (fix 3).
        return Principal(id=claims.sub, role=state.role, login=claims.login, scope=claims.scope)

    async def require(self, conn: HTTPConnection, roles: frozenset[int] | None = None) -> Principal | None:
        principal = await self.authenticate(conn)
        if principal is not None and roles is not None and principal.role not in roles:
            raise ApiError(403, "Forbidden")
        return principal


def guard_of(conn: HTTPConnection) -> Guard:
    guard: Guard = conn.state.guard
    return guard


async def publish_revocation(
    keyspace: Keyspace, user_id: int, retention_s: float, instant_ms: int | None = None
) -> None:
    """Tell every process that `user_id` was deactivated, deleted, had its role or a credential changed: guards
    drop their cached state for it and gateways close its sockets (4401). Best effort: the 30 s cache bounds it
    anyway, and `users.tokens_revoked_at` (when the caller recorded it) keeps it durable. `instant_ms` is the
    revocation's instant, the one recorded in the database (default: now).

    The revocation is also logged with its time (`Keyspace.revocation_log_key`), in the same transaction as the
    message, for `retention_s` (a token's lifetime: an older revocation concerns only expired tokens). A gateway
    that was not subscribed when the message went out (Redis restarted, its connection lost, a task started
    later) reads the log when it subscribes and closes the sockets whose token predates a revocation."""
    now_ms = int(time.time() * 1000) if instant_ms is None else instant_ms
    retention_ms = max(1, int(retention_s * 1000))
    try:
        async with keyspace.client.pipeline(transaction=True) as pipe:
            pipe.zadd(keyspace.revocation_log_key, {str(user_id): now_ms})
            pipe.zremrangebyscore(keyspace.revocation_log_key, "-inf", now_ms - retention_ms)
            pipe.pexpire(keyspace.revocation_log_key, retention_ms)
            pipe.publish(keyspace.revocations_channel, str(user_id))
            await pipe.execute()
    except Exception as exc:
        log.warning("revocation publish failed", extra={"userId": user_id, "error": type(exc).__name__})


def revocation_retention_s(jwt_expires_seconds: int) -> float:
    """How long a revocation matters: until every token issued before it has expired (plus the verifier's
    clock leeway)."""
    return float(jwt_expires_seconds + LEEWAY_S)


RevokedCallback = Callable[[int], None]


class RevocationListener:
    """One subscription per process to the revocations channel: each message drops that user's cached state at
    once, so a deactivation reaches every task in milliseconds rather than at the end of the 30 s window.

    The cache window stays the guarantee: while Redis is unreachable the listener retries with back-off, and
    after every (re)subscription it clears the whole cache, because messages published while it was not
    subscribed are lost. Callbacks (`on_revoked`, e.g. a gateway closing that user's sockets) run on the
    event loop and must not block.
    """

    def __init__(self, keyspace: Keyspace, cache: UserStateCache) -> None:
        self.keyspace = keyspace
        self.cache = cache
        self.callbacks: list[RevokedCallback] = []
        self.subscribed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def on_revoked(self, callback: RevokedCallback) -> None:
        self.callbacks.append(callback)

    def _handle(self, data: object) -> None:
        try:
            user_id = int(data.decode() if isinstance(data, bytes) else str(data))
        except ValueError:
            log.warning("revocation message ignored: not a user id")
            return
        self.cache.forget(user_id)
        for callback in self.callbacks:
            try:
                callback(user_id)
            except Exception:
                log.exception("revocation callback failed")

    async def _run(self) -> None:
        backoff = 0.25
        while True:
            try:
                async with self.keyspace.client.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(self.keyspace.revocations_channel)
                    self.cache.clear()
                    self.subscribed.set()
                    backoff = 0.25
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            self._handle(message.get("data"))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.subscribed.clear()
                log.warning(
                    "revocation subscription lost; retrying",
                    extra={"error": type(exc).__name__, "retryInS": backoff},
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def __aenter__(self) -> RevocationListener:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
