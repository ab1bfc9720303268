"""`GET /api/desktop/bootstrap` without the resync storm (I-16, fix 13).

Every committed write emits `db-changed`, and each online desktop then asks for the bootstrap up to 14 times at
once. This module makes those requests cheap and never stale:

- **Data version.** The version of the data is `(redis, local)`: `local` is bumped synchronously by the database's
  commit hook in this process; `redis` is a counter (`<prefix>bootstrap:version`) that `CommitBarrier` INCRs
  after a request that committed and *before* its response starts, so once a client has seen a write's response
  every api process reads the new version. Each bootstrap request reads the counter (one Redis GET) and serves the
  cached payload only when it was built at the current version (and is younger than `MAX_AGE_S`, a safety net
  for writers outside this service such as the old backend during the cut-over).
- **Single flight.** Concurrent requests for the same version share one build; a build is one consistent
  snapshot (`START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY`) of 14 queries on one pooled connection.
- **ETag.** The body's hash; `If-None-Match` with it answers 304 without a body. Equal data gives equal tags in
  every process.
- **Roles (I-14).** Admins get every active user; anyone else gets only their own row in `users` (the desktop
  reads its own identity there and nothing else about other users; §4.18). Every list names its columns instead
  of `SELECT *`, so a new column never leaks by itself; the keys and values are those of the old payload.
- If Redis cannot be read the cache is bypassed (each request does its own pass) rather than risk serving stale data.
- **Other reads.** The same version keys `cached(key, build)`: the encoded body of any read that depends only on
  the database and `key` (the reference lists of /api/lookups, a project's items). Same freshness rule, same
  single flight; this is what takes the database off the hot path of those endpoints (issue 5's throughput goal).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, MutableMapping
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ccsm_core.codec import dumps
from ccsm_core.db import Database
from ccsm_core.guard import Principal
from ccsm_core.keyspace import Keyspace
from ccsm_core.lifecycle import Lifecycle
from ccsm_core.settings import Settings

log = logging.getLogger("ccsm.api.bootstrap")

MAX_AGE_S = 30.0
MAX_BODIES = 1024  # cached read bodies per process (a few reference lists plus one per project's items)
REDIS_TIMEOUT_S = 0.5
DEFAULT_ENABLED = True  # the benchmark's uncached baseline turns this off before creating the app
CACHE_CONTROL = "private, no-cache"

Version = tuple[int, int]
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


@dataclass
class Payload:
    version: Version | None
    built_at: float
    admin_body: bytes
    admin_etag: str
    tail: bytes  # everything after the `users` key, starting with the comma
    tail_digest: bytes
    user_rows: dict[int, bytes] = field(default_factory=dict)

    def for_principal(self, principal: Principal | None) -> tuple[bytes, str]:
        if principal is None or principal.is_admin:
            return self.admin_body, self.admin_etag
        row = self.user_rows.get(principal.id, b"")
        etag = '"' + hashlib.blake2b(self.tail_digest + row, digest_size=12).hexdigest() + '"'
        return b'{"users":[' + row + b"]" + self.tail, etag


class _CommitMark:
    __slots__ = ("committed",)

    def __init__(self) -> None:
        self.committed = False


_request_mark: ContextVar[_CommitMark | None] = ContextVar("ccsm_bootstrap_commit_mark", default=None)


class VersionReader:
    """Reads the shared version with at most one GET in flight, without ever answering from a GET that was sent
    before the caller arrived (it could predate a write the caller has already seen): callers that arrive while a
    GET is in flight wait for the next one, which starts when it returns. A storm of N requests costs about two
    round trips and a handful of GETs instead of N connections."""

    def __init__(self, keyspace: Keyspace, key: str) -> None:
        self.keyspace = keyspace
        self.key = key
        self._current: asyncio.Future[int] | None = None
        self._next: asyncio.Future[int] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.gets = 0

    async def read(self) -> int:
        loop = asyncio.get_running_loop()
        if self._current is None:
            self._current = loop.create_future()
            self._start(self._current)
            return await asyncio.shield(self._current)
        if self._next is None:
            self._next = loop.create_future()
        return await asyncio.shield(self._next)

    def _start(self, future: asyncio.Future[int]) -> None:
        task = asyncio.get_running_loop().create_task(self._run(future))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, future: asyncio.Future[int]) -> None:
        self.gets += 1
        try:
            raw = await asyncio.wait_for(self.keyspace.client.get(self.key), REDIS_TIMEOUT_S)
            future.set_result(int(raw or 0))
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: nobody may be waiting any more
        finally:
            self._current = None
            if self._next is not None:
                self._current, self._next = self._next, None
                self._start(self._current)


class BootstrapCache:
    def __init__(self, db: Database, keyspace: Keyspace, enabled: bool = True, max_age_s: float = MAX_AGE_S) -> None:
        self.db = db
        self.keyspace = keyspace
        self.enabled = enabled
        self.max_age_s = max_age_s
        self.version_key = keyspace.key("bootstrap", "version")
        self.versions = VersionReader(keyspace, self.version_key)
        self.local_version = 0
        self._entry: Payload | None = None
        self._flights: dict[Version, asyncio.Task[Payload]] = {}
        self._background: set[asyncio.Task[None]] = set()
        self.builds = 0  # passes over the database (tests and the benchmark read it)
        self._warned_at = -1e9
        self._bodies: dict[Hashable, tuple[Version, float, bytes]] = {}
        self._body_flights: dict[tuple[Hashable, Version], asyncio.Task[bytes]] = {}

    # --- the write side ----------------------------------------------------------------------------------------

    def on_commit(self, reason: str) -> None:
        """The commit hook: the local version moves at once; the shared one before the response (CommitBarrier),
        or right away in the background for a commit outside a request."""
        self.local_version += 1
        mark = _request_mark.get()
        if mark is not None:
            mark.committed = True
            return
        with contextlib.suppress(RuntimeError):  # no running loop: nothing to publish to
            task = asyncio.get_running_loop().create_task(self.publish_version())
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def publish_version(self) -> None:
        try:
            await asyncio.wait_for(self.keyspace.client.incr(self.version_key), REDIS_TIMEOUT_S)
        except Exception as exc:
            # The write stands; other processes catch up at MAX_AGE_S at the latest. Drop our own entry now.
            self._entry = None
            log.warning("bootstrap version bump failed", extra={"error": type(exc).__name__})

    # --- the read side -----------------------------------------------------------------------------------------

    async def _version(self) -> Version | None:
        local = self.local_version
        try:
            shared = await self.versions.read()
        except Exception as exc:
            now = time.monotonic()
            if now - self._warned_at > 10:
                self._warned_at = now
                log.warning("bootstrap version unreadable; serving uncached", extra={"error": type(exc).__name__})
            return None
        return (shared, local)

    async def payload(self) -> Payload:
        if not self.enabled:
            return await self._build(None)
        version = await self._version()
        if version is None:
            return await self._build(None)
        entry = self._entry
        if entry is not None and entry.version == version and time.monotonic() - entry.built_at < self.max_age_s:
            return entry
        flight = self._flights.get(version)
        if flight is None:
            # The pass runs in a task of its own: a caller that goes away (client disconnect) cancels only its
            # own wait, never the pass the other callers share.
            flight = asyncio.get_running_loop().create_task(self._build(version))
            self._flights[version] = flight
            flight.add_done_callback(lambda task, v=version: self._landed(v, task))  # type: ignore[misc]
        return await asyncio.shield(flight)

    async def cached(self, key: Hashable, build: Callable[[], Awaitable[bytes]]) -> bytes:
        """The body `build()` makes for `key`, from memory while the data version is unchanged (and younger than
        `max_age_s`); concurrent misses for one key and version share one build."""
        if not self.enabled:
            return await build()
        version = await self._version()
        if version is None:
            return await build()
        hit = self._bodies.get(key)
        if hit is not None and hit[0] == version and time.monotonic() - hit[1] < self.max_age_s:
            return hit[2]
        flight_key = (key, version)
        flight = self._body_flights.get(flight_key)
        if flight is None:
            flight = asyncio.get_running_loop().create_task(_build_body(build))
            self._body_flights[flight_key] = flight
            flight.add_done_callback(lambda task, k=flight_key: self._body_landed(k, task))  # type: ignore[misc]
        return await asyncio.shield(flight)

    def _body_landed(self, flight_key: tuple[Hashable, Version], task: asyncio.Task[bytes]) -> None:
        self._body_flights.pop(flight_key, None)
        if task.cancelled() or task.exception() is not None:  # exception() also marks it retrieved
            return
        key, version = flight_key
        if self.local_version == version[1]:  # no commit in this process while it was built
            if len(self._bodies) >= MAX_BODIES:
                self._bodies.clear()
            self._bodies[key] = (version, time.monotonic(), task.result())

    def _landed(self, version: Version, task: asyncio.Task[Payload]) -> None:
        self._flights.pop(version, None)
        if task.cancelled() or task.exception() is not None:  # exception() also marks it retrieved
            return
        if self.local_version == version[1]:
            self._entry = task.result()

    async def respond(self, request: Request, principal: Principal | None) -> Response:
        payload = await self.payload()
        body, etag = payload.for_principal(principal)
        headers = {"ETag": etag, "Cache-Control": CACHE_CONTROL}
        if _matches(request.headers.get("if-none-match"), etag):
            return Response(status_code=304, headers=headers)
        return Response(body, headers=headers, media_type="application/json")

    async def _build(self, version: Version | None) -> Payload:
        self.builds += 1
        data: dict[str, list[dict[str, Any]]] = {}
        async with self.db.connection() as conn, conn.cursor() as cur:
            await cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
            try:
                for key, sql in QUERIES:
                    await cur.execute(sql)
                    data[key] = list(await cur.fetchall())
            finally:
                await conn.rollback()
        users = data.pop("users")
        tail = b"," + dumps(data)[1:]
        users_json = dumps(users)
        admin_body = b'{"users":' + users_json + tail
        rows = {int(u["id"]): dumps(u) for u in users}
        return Payload(
            version=version,
            built_at=time.monotonic(),
            admin_body=admin_body,
            admin_etag='"' + hashlib.blake2b(admin_body, digest_size=12).hexdigest() + '"',
            tail=tail,
            tail_digest=hashlib.blake2b(tail, digest_size=16).digest(),
            user_rows=rows,
        )


async def _build_body(build: Callable[[], Awaitable[bytes]]) -> bytes:
    return await build()


def _matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    for candidate in header.split(","):
        tag = candidate.strip()
        if tag == "*" or tag.removeprefix("W/") == etag:
            return True
    return False


class CommitBarrier:
    """Pure ASGI: when a request committed a write, the shared data version is bumped before its response starts
    (so a client that has seen the response never gets the old bootstrap from any api process)."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        mark = _CommitMark()
        token = _request_mark.set(mark)
        state = scope.get("state") or {}
        cache: BootstrapCache | None = state.get("bootstrap")

        async def send_after_bump(message: Message) -> None:
            if message["type"] == "http.response.start" and mark.committed and cache is not None:
                mark.committed = False
                await cache.publish_version()
            await send(message)

        try:
            await self.app(scope, receive, send_after_bump)
        finally:
            _request_mark.reset(token)
            if mark.committed and cache is not None:  # committed, then failed before any response started
                await cache.publish_version()


@asynccontextmanager
async def bootstrap_cache(
    settings: Settings, lifecycle: Lifecycle, state: dict[str, Any]
) -> AsyncIterator[dict[str, Any]]:
    """The lifespan resource (needs `db` and `keyspace`): the cache, wired to the commit hook."""
    cache = BootstrapCache(state["db"], state["keyspace"], enabled=DEFAULT_ENABLED)
    db: Database = state["db"]
    db.on_commit(cache.on_commit)
    yield {"bootstrap": cache}


# --- queries: the old payload's keys in its order, with explicit columns (I-14) ----------------------------------

QUERIES: tuple[tuple[str, str], ...] = (
    (
        "users",
        "SELECT id, first_name, last_name, login, system_role, is_active FROM users WHERE is_active = 1 ORDER BY id",
    ),
    (
        "projects",
        "SELECT id, code, name, type_id, type_code, item_id, unit_id, project_status_id, customer_id, is_jira, "
        "is_active, created_at FROM projects ORDER BY id",
    ),
    (
        "projectUsers",
        "SELECT pu.id, pu.project_id, pu.user_id, pu.project_role_id FROM project_users pu "
        "JOIN projects p ON p.id = pu.project_id WHERE p.project_status_id = 1 ORDER BY pu.id",
    ),
    ("projectRoles", "SELECT id, name, label FROM ref_project_roles ORDER BY id"),
    (
        "tasks",
        "SELECT id, name, description, category_id, default_role_id, in_progress_status_id, completed_status_id "
        "FROM tasks ORDER BY id",
    ),
    ("customers", "SELECT id, name FROM customers ORDER BY name, id"),
    ("itemTypes", "SELECT id, name FROM ref_item_types ORDER BY name, id"),
    (
        "projectTasks",
        "SELECT id, project_id, task_id, order_number, only_after_number, is_mandatory, override_role_id "
        "FROM project_tasks ORDER BY id",
    ),
    ("projectTaskRoles", "SELECT id, project_id, task_id, role_id FROM project_task_roles ORDER BY id"),
    ("taskDataDefinitions", "SELECT id, `key`, label, value_type FROM task_data_definitions ORDER BY id"),
    (
        "projectTaskData",
        "SELECT id, project_task_id, data_def_id, is_required, value_int, value_decimal, value_varchar, value_text, "
        "value_bool, value_date, value_datetime, value_customer_id, value_json, created_at, updated_at "
        "FROM project_task_data ORDER BY id",
    ),
    ("refItemStatus", "SELECT id, label AS name, label FROM ref_item_status ORDER BY project_id, label, id"),
    ("cfsItems", "SELECT id, project_id, label, task_status_id FROM cfs_items ORDER BY id"),
    ("imItems", "SELECT id, project_id, label, task_status_id FROM im_items ORDER BY id"),
)
