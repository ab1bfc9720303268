"""The request guard (core/ccsm_core/guard.py): token -> principal against the user's *current* state, the
≤ 30 s cache, single flight, and revocation across processes through Redis."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import pytest
import redis
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.testclient import TestClient

from ccsm_core import service
from ccsm_core.db import connect_sync
from ccsm_core.errors import ApiError
from ccsm_core.guard import (
    ADMIN_ONLY,
    REVOCATION_TTL_S,
    STAFF,
    Guard,
    RevocationListener,
    UserState,
    UserStateCache,
    epoch_ms,
    utc_datetime,
)
from ccsm_core.lifecycle import Lifecycle
from ccsm_core.settings import Settings
from ccsm_core.tokens import DESKTOP_SCOPE, TokenService

# --- fakes -------------------------------------------------------------------------------------------------------


class FakeDatabase:
    """`users` as a dict; counts queries; can hold a query until the test releases it, or fail once."""

    def __init__(self, users: dict[int, tuple[int, int | None]], revoked: dict[int, dt.datetime] | None = None) -> None:
        self.users = users
        self.revoked = revoked or {}
        self.queries = 0
        self.gate: asyncio.Event | None = None
        self.entered: asyncio.Event | None = None
        self.fail_next = False

    async def fetch_one(self, sql: str, args: tuple[Any, ...]) -> dict[str, Any] | None:
        self.queries += 1
        snapshot = self.users.get(args[0])  # read before waiting, like a query that already ran
        if self.entered is not None:
            self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_next:
            self.fail_next = False
            raise ConnectionError("database went away")
        if snapshot is None:
            return None
        return {"is_active": snapshot[0], "system_role": snapshot[1], "tokens_revoked_at": self.revoked.get(args[0])}


SECRET = "guard-test-secret-0123456789abcdef-xyz"


def request_with(token: str | None, path: str = "/") -> Request:
    headers = [] if token is None else [(b"authorization", f"Bearer {token}".encode())]
    return Request({"type": "http", "method": "GET", "path": path, "headers": headers, "query_string": b""})


def make_guard(users: dict[int, tuple[int, int | None]], ttl_s: float = REVOCATION_TTL_S) -> tuple[Guard, FakeDatabase]:
    db = FakeDatabase(users)
    return Guard(TokenService(SECRET), UserStateCache(db, ttl_s=ttl_s), auth_required=True), db  # type: ignore[arg-type]


def token(sub: int, role: int = 1, login: str = "admin") -> str:
    return TokenService(SECRET).issue(sub, role, login)


# --- unit: the guard's decisions ---------------------------------------------------------------------------------


def test_the_cache_window_is_at_most_30_seconds() -> None:
    assert REVOCATION_TTL_S <= 30


def test_the_principal_carries_the_current_role_not_the_one_in_the_token() -> None:
    guard, _ = make_guard({2: (1, 2)})

    async def scenario() -> Any:
        return await guard.require(request_with(token(2, role=1)), STAFF)

    principal = asyncio.run(scenario())
    assert (principal.id, principal.role, principal.login, principal.is_admin) == (2, 2, "admin", False)


def test_a_demoted_user_is_forbidden_on_admin_routes() -> None:
    guard, _ = make_guard({2: (1, 2)})
    with pytest.raises(ApiError) as err:
        asyncio.run(guard.require(request_with(token(2, role=1)), ADMIN_ONLY))
    assert (err.value.status, err.value.message) == (403, "Forbidden")


@pytest.mark.parametrize("users", [{1: (0, 1)}, {}], ids=["inactive", "deleted"])
def test_an_inactive_or_deleted_user_gets_invalid_or_expired_token(users: dict[int, tuple[int, int]]) -> None:
    guard, _ = make_guard(users)
    with pytest.raises(ApiError) as err:
        asyncio.run(guard.require(request_with(token(1))))
    assert (err.value.status, err.value.message) == (401, "Invalid or expired token")


def test_deactivation_reaches_a_still_valid_token_when_the_cache_window_ends() -> None:
    users = {1: (1, 1)}
    guard, db = make_guard(users, ttl_s=0.2)
    t = token(1)

    async def scenario() -> tuple[bool, float]:
        await guard.require(request_with(t))
        users[1] = (0, 1)  # deactivated behind the cache's back (no revocation message)
        changed_at = time.monotonic()
        still_cached = (await guard.users.get(1)) == UserState(True, 1)
        deadline = changed_at + 5
        while time.monotonic() < deadline:  # the condition, with a deadline
            try:
                await guard.require(request_with(t))
            except ApiError:
                return still_cached, time.monotonic() - changed_at
            await asyncio.sleep(0.01)
        return still_cached, float("inf")

    still_cached, took = asyncio.run(scenario())
    assert still_cached is True
    assert took <= 0.2 + 0.5
    assert db.queries >= 2


def test_forget_makes_the_next_request_see_the_change_at_once() -> None:
    users = {1: (1, 1)}
    guard, _ = make_guard(users)
    t = token(1)

    async def scenario() -> None:
        await guard.require(request_with(t))
        users[1] = (0, 1)
        guard.users.forget(1)
        await guard.require(request_with(t))

    with pytest.raises(ApiError) as err:
        asyncio.run(scenario())
    assert err.value.status == 401


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (None, "Missing bearer token"),
        ("Basic YWRtaW46eA==", "Missing bearer token"),
        ("Bearer", "Missing bearer token"),
        ("Bearer not.a.token", "Invalid or expired token"),
        ("Bearer " + "a" * 100_000, "Invalid or expired token"),
    ],
)
def test_header_problems_get_the_old_401_bodies(header: str | None, message: str) -> None:
    guard, db = make_guard({1: (1, 1)})
    headers = [] if header is None else [(b"authorization", header.encode())]
    req = Request({"type": "http", "method": "GET", "path": "/", "headers": headers, "query_string": b""})
    with pytest.raises(ApiError) as err:
        asyncio.run(guard.require(req))
    assert (err.value.status, err.value.message) == (401, message)
    assert db.queries == 0  # no database work for a token that does not verify


def test_a_zero_subject_is_invalid_token() -> None:
    guard, _ = make_guard({1: (1, 1)})
    with pytest.raises(ApiError) as err:
        asyncio.run(guard.require(request_with(token(0))))
    assert (err.value.status, err.value.message) == (401, "Invalid token")


def test_with_auth_off_the_guard_lets_everyone_through_as_the_old_backend_did() -> None:
    db = FakeDatabase({})
    guard = Guard(TokenService(""), UserStateCache(db), auth_required=False)  # type: ignore[arg-type]
    assert asyncio.run(guard.require(request_with(None), ADMIN_ONLY)) is None
    assert db.queries == 0


# --- unit: issue 12, desktop-scoped tokens and the revocation instant -------------------------------------------


def desktop_token(sub: int = 3, role: int = 2, now: float | None = None) -> str:
    return TokenService(SECRET).issue(sub, role, "pnair", now=now, scope=DESKTOP_SCOPE)


@pytest.mark.parametrize("path", ["/api/users", "/api/customers", "/api/lookups/task-categories", "/api/items", "/"])
def test_a_desktop_token_is_forbidden_outside_the_desktop_paths_whatever_the_route_asks(path: str) -> None:
    guard, _ = make_guard({3: (1, 2)})
    for roles in (None, STAFF, ADMIN_ONLY):  # even a route that lets any role in
        with pytest.raises(ApiError) as err:
            asyncio.run(guard.require(request_with(desktop_token(), path), roles))
        assert (err.value.status, err.value.message) == (403, "Forbidden")


def test_a_desktop_token_passes_on_the_desktop_paths_and_names_its_scope() -> None:
    guard, _ = make_guard({3: (1, 2)})
    principal = asyncio.run(guard.require(request_with(desktop_token(), "/API/Desktop/bootstrap"), STAFF))
    assert (principal.id, principal.role, principal.scope) == (3, 2, "desktop")
    web = asyncio.run(guard.require(request_with(token(3, 2), "/api/users"), STAFF))
    assert web.scope is None


def test_an_invalid_desktop_token_is_401_before_it_is_403() -> None:
    guard, _ = make_guard({3: (0, 2)})  # inactive
    with pytest.raises(ApiError) as err:
        asyncio.run(guard.require(request_with(desktop_token(), "/api/users")))
    assert err.value.status == 401


def test_a_token_issued_before_the_users_revocation_is_refused_and_one_after_it_passes() -> None:
    guard, db = make_guard({1: (1, 1)})
    issue = TokenService(SECRET).issue

    async def outcome(t: str) -> int:
        try:
            await guard.require(request_with(t))
        except ApiError as exc:
            return exc.status
        return 200

    async def scenario() -> list[int]:
        now = time.time()
        # A revocation instant in the future of these tokens, so they are all still valid otherwise.
        db.revoked = {1: utc_datetime(int(now * 1000) + 500)}
        guard.users.forget(1)
        return [
            await outcome(issue(1, 1, "admin", now=now)),  # before, in the same second or the previous one
            await outcome(issue(1, 1, "admin", now=now + 0.499)),  # 1 ms before the revocation
            await outcome(issue(1, 1, "admin", now=now + 0.500)),  # at it: a login right after
            await outcome(issue(1, 1, "admin", now=now + 0.9)),  # after it
        ]

    assert asyncio.run(scenario()) == [401, 401, 200, 200]


def test_the_revocation_instant_round_trips_milliseconds_through_a_datetime3_value() -> None:
    instant = 1_900_000_000_123
    assert utc_datetime(instant) == dt.datetime(2030, 3, 17, 17, 46, 40, 123000)
    assert epoch_ms(utc_datetime(instant)) == instant


def test_the_revocation_instant_comes_with_the_cached_state_without_another_query() -> None:
    guard, db = make_guard({1: (1, 1)})
    db.revoked = {1: utc_datetime(int(time.time() * 1000) - 60_000)}
    t = token(1)

    async def scenario() -> None:
        for _ in range(5):
            await guard.require(request_with(t))

    asyncio.run(scenario())
    assert db.queries == 1


# --- unit: the cache's single flight -----------------------------------------------------------------------------


def test_concurrent_misses_for_one_user_share_one_query() -> None:
    async def scenario() -> tuple[int, list[UserState | None]]:
        db = FakeDatabase({1: (1, 2)})
        db.gate = asyncio.Event()
        cache = UserStateCache(db)  # type: ignore[arg-type]
        waiters = [asyncio.create_task(cache.get(1)) for _ in range(20)]
        for _ in range(5):
            await asyncio.sleep(0)
        db.gate.set()
        results = await asyncio.gather(*waiters)
        await cache.get(1)  # and then it is cached
        return db.queries, results

    queries, results = asyncio.run(scenario())
    assert queries == 1
    assert results == [UserState(True, 2)] * 20


def test_a_cancelled_first_caller_does_not_cancel_the_query_for_the_others() -> None:
    async def scenario() -> tuple[UserState | None, int]:
        db = FakeDatabase({1: (1, 1)})
        db.gate, db.entered = asyncio.Event(), asyncio.Event()
        cache = UserStateCache(db)  # type: ignore[arg-type]
        leader = asyncio.create_task(cache.get(1))
        await db.entered.wait()
        follower = asyncio.create_task(cache.get(1))
        await asyncio.sleep(0)
        leader.cancel()
        db.gate.set()
        result = await follower
        assert leader.cancelled()
        return result, db.queries

    result, queries = asyncio.run(scenario())
    assert result == UserState(True, 1)
    assert queries == 1


def test_a_failed_query_is_not_cached() -> None:
    async def scenario() -> tuple[str, UserState | None]:
        db = FakeDatabase({1: (1, 1)})
        db.fail_next = True
        cache = UserStateCache(db)  # type: ignore[arg-type]
        try:
            await cache.get(1)
        except ConnectionError as exc:
            first = str(exc)
        return first, await cache.get(1)

    first, second = asyncio.run(scenario())
    assert first == "database went away"
    assert second == UserState(True, 1)


def test_a_revocation_during_a_query_keeps_that_answer_out_of_the_cache() -> None:
    async def scenario() -> tuple[UserState | None, UserState | None]:
        users = {1: (1, 1)}
        db = FakeDatabase(users)
        db.gate, db.entered = asyncio.Event(), asyncio.Event()
        cache = UserStateCache(db)  # type: ignore[arg-type]
        stale = asyncio.create_task(cache.get(1))
        await db.entered.wait()  # the row was read while still active
        users[1] = (0, 1)
        cache.forget(1)  # the revocation arrives while the query is in flight
        db.gate.set()
        first = await stale
        db.gate = None
        return first, await cache.get(1)

    first, second = asyncio.run(scenario())
    assert first == UserState(True, 1)  # that request raced the change
    assert second == UserState(False, 1)  # but the stale answer was not cached


# --- integration: real MariaDB, real Redis, two "processes" ------------------------------------------------------


def _set_active(settings: Settings, user_id: int, active: int) -> None:
    conn = connect_sync(settings, settings.db_name)
    try:
        conn.cursor().execute("UPDATE users SET is_active = %s WHERE id = %s", (active, user_id))
    finally:
        conn.close()


async def whoami(request: Request) -> Response:
    principal = await request.state.guard.require(request, STAFF)
    return JSONResponse({"id": principal.id, "role": principal.role})


@contextmanager
def guarded_app(settings: Settings) -> Iterator[tuple[TestClient, dict[str, Any]]]:
    captured: dict[str, Any] = {}

    @asynccontextmanager
    async def capture(s: Settings, lc: Lifecycle, state: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        captured.update(state)
        yield {}

    app = service.build_app(
        settings,
        [service.route("/whoami", whoami)],
        [service.database, service.redis, service.guard, capture],
    )
    with TestClient(app) as client:
        yield client, captured


def _setter(event: threading.Event, user_id: int) -> Any:
    def callback(uid: int) -> None:
        if uid == user_id:
            event.set()

    return callback


def test_the_old_backends_token_passes_the_guard(fresh_db: Settings) -> None:
    from tests.core.test_tokens import VECTOR_SECRET, VECTORS

    settings = dataclasses.replace(fresh_db, jwt_secret=VECTOR_SECRET)
    with guarded_app(settings) as (client, _):
        ok = client.get("/whoami", headers={"Authorization": f"Bearer {VECTORS['employee_valid_until_2126']}"})
        expired = client.get("/whoami", headers={"Authorization": f"Bearer {VECTORS['admin_expired']}"})
    assert (ok.status_code, ok.json()) == (200, {"id": 2, "role": 2})
    assert (expired.status_code, expired.json()) == (401, {"error": "Invalid or expired token"})


def test_a_revocation_reaches_every_process_before_the_cache_window_ends(fresh_db: Settings) -> None:
    """Two app instances stand for two tasks: both have the user cached as active; the user is deactivated and
    the api publishes the revocation; both refuse the still-valid token on the next request."""
    headers = {"Authorization": f"Bearer {TokenService(fresh_db.jwt_secret).issue(2, 2, 'mreyes')}"}
    revoked = [threading.Event(), threading.Event()]
    with guarded_app(fresh_db) as (first, state1), guarded_app(fresh_db) as (second, state2):
        for client, state, event in ((first, state1, revoked[0]), (second, state2, revoked[1])):
            listener: RevocationListener = state["revocations"]
            listener.on_revoked(_setter(event, 2))
            client.portal.call(asyncio.wait_for, listener.subscribed.wait(), 10)
        assert first.get("/whoami", headers=headers).status_code == 200
        assert second.get("/whoami", headers=headers).status_code == 200
        _set_active(fresh_db, 2, 0)
        assert first.get("/whoami", headers=headers).status_code == 200  # cached: the window is real
        r = redis.Redis.from_url(fresh_db.redis_url)
        try:
            r.publish(f"{fresh_db.redis_prefix}events:revocations", "2")
        finally:
            r.close()
        assert all(e.wait(10) for e in revoked)
        after = [c.get("/whoami", headers=headers) for c in (first, second)]
    assert [(a.status_code, a.json()) for a in after] == [(401, {"error": "Invalid or expired token"})] * 2


def test_a_malformed_revocation_message_is_ignored(fresh_db: Settings) -> None:
    headers = {"Authorization": f"Bearer {TokenService(fresh_db.jwt_secret).issue(1, 1, 'admin')}"}
    seen = threading.Event()
    with guarded_app(fresh_db) as (client, state):
        listener: RevocationListener = state["revocations"]
        listener.on_revoked(_setter(seen, 1))
        client.portal.call(asyncio.wait_for, listener.subscribed.wait(), 10)
        assert client.get("/whoami", headers=headers).status_code == 200
        r = redis.Redis.from_url(fresh_db.redis_url)
        try:
            r.publish(f"{fresh_db.redis_prefix}events:revocations", "not-a-number")
            r.publish(f"{fresh_db.redis_prefix}events:revocations", "1")
        finally:
            r.close()
        assert seen.wait(10)
        assert client.get("/whoami", headers=headers).status_code == 200  # the listener survived the garbage


def test_a_published_revocation_is_logged_with_its_time_for_a_token_lifetime_and_announced(settings: Settings) -> None:
    from ccsm_core.guard import publish_revocation
    from ccsm_core.keyspace import Keyspace

    async def scenario() -> tuple[float | None, float | None, int, bytes | None, int, int]:
        keyspace = Keyspace(settings)
        log_key = keyspace.revocation_log_key
        client = keyspace.client
        try:
            await client.delete(log_key)
            await client.zadd(log_key, {"41": (time.time() - 120) * 1000})  # older than the retention below
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            await pubsub.subscribe(keyspace.revocations_channel)
            before = int(time.time() * 1000)
            await publish_revocation(keyspace, 42, retention_s=60)
            after = int(time.time() * 1000)
            message = None
            async with asyncio.timeout(10):
                while message is None:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            await pubsub.aclose()  # type: ignore[no-untyped-call]
            logged = await client.zscore(log_key, "42")
            pruned = await client.zscore(log_key, "41")
            ttl = await client.pttl(log_key)
            await client.delete(log_key)
            return logged, pruned, ttl, message["data"], before, after
        finally:
            await keyspace.close()

    logged, pruned, ttl, data, before, after = asyncio.run(scenario())
    assert logged is not None
    assert before <= logged <= after
    assert pruned is None  # a revocation older than a token's lifetime concerns only expired tokens
    assert 0 < ttl <= 60_000
    assert data == b"42"
