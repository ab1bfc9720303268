"""`GET /api/desktop/bootstrap` without the resync storm (I-16, fix 13).

Every committed write emits `db-changed`, and each online desktop then asks for the bootstrap up to 14 times at
once. This module makes those requests cheap and never stale:

- **Data version.** `ccsm_core.response_cache.DataVersion`, shared with the response cache: moved by every commit,
  in Redis before the write's response (`CommitBarrier`), so once a client has seen a write's response every api
  process reads the new version. The cached payload is served only when it was built at the current version (and
  is younger than `MAX_AGE_S`, a safety net for writers outside this service such as the old backend during the
  cut-over).
- **Single flight.** Concurrent requests for the same version share one build; a build is one consistent
  snapshot (`START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY`) of 14 queries on one pooled connection, in
  one round trip (`Database.snapshot`).
- **ETag.** The body's hash; `If-None-Match` with it answers 304 without a body. Equal data gives equal tags in
  every process.
- **Roles (I-14).** Admins get every active user; anyone else gets only their own row in `users` (the desktop
  reads its own identity there and nothing else about other users; §4.18). Every list names its columns instead
  of `SELECT *`, so a new column never leaks by itself; the keys and values are those of the old payload.
- If Redis cannot be read the cache is bypassed (each request does its own pass) rather than risk serving stale data.
- The route is declared `UNCACHED` for the response cache: one payload serves every caller (their own `users` row
  spliced in), where a per-user cache would rebuild it per user after every write.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ccsm_core.codec import dumps
from ccsm_core.db import Database
from ccsm_core.guard import Principal
from ccsm_core.keyspace import Keyspace
from ccsm_core.lifecycle import Lifecycle
from ccsm_core.response_cache import MAX_AGE_S, DataVersion, Version, etag_matches
from ccsm_core.settings import Settings

log = logging.getLogger("ccsm.api.bootstrap")

CACHE_CONTROL = "private, no-cache"


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


class BootstrapCache:
    def __init__(
        self,
        db: Database,
        keyspace: Keyspace,
        enabled: bool = True,
        max_age_s: float = MAX_AGE_S,
        version: DataVersion | None = None,
    ) -> None:
        self.db = db
        self.enabled = enabled
        self.max_age_s = max_age_s
        self.version = version or DataVersion(keyspace)
        self.version_key = self.version.key
        self._entry: Payload | None = None
        self._flights: dict[Version, asyncio.Task[Payload]] = {}
        self.builds = 0  # passes over the database (tests and the benchmark read it)

    def on_commit(self, reason: str) -> None:
        """The commit hook of a cache that owns its data version (tests); the service shares the response cache's."""
        self.version.on_commit(reason)

    # --- the read side -----------------------------------------------------------------------------------------

    async def payload(self) -> Payload:
        if not self.enabled:
            return await self._build(None)
        version = await self.version.current()
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

    def _landed(self, version: Version, task: asyncio.Task[Payload]) -> None:
        self._flights.pop(version, None)
        if task.cancelled() or task.exception() is not None:  # exception() also marks it retrieved
            return
        if self.version.local == version[1]:
            self._entry = task.result()

    async def respond(self, request: Request, principal: Principal | None) -> Response:
        payload = await self.payload()
        body, etag = payload.for_principal(principal)
        headers = {"ETag": etag, "Cache-Control": CACHE_CONTROL}
        if etag_matches(request.headers.get("if-none-match"), etag):
            return Response(status_code=304, headers=headers)
        return Response(body, headers=headers, media_type="application/json")

    async def _build(self, version: Version | None) -> Payload:
        self.builds += 1
        results = await self.db.snapshot(SNAPSHOT)
        data: dict[str, list[dict[str, Any]]] = {key: rows for (key, _), rows in zip(QUERIES, results, strict=True)}
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


@asynccontextmanager
async def bootstrap_cache(
    settings: Settings, lifecycle: Lifecycle, state: dict[str, Any]
) -> AsyncIterator[dict[str, Any]]:
    """The lifespan resource (needs `db`, `keyspace` and the response cache's `data_version`)."""
    cache = BootstrapCache(
        state["db"], state["keyspace"], enabled=settings.response_cache, version=state["data_version"]
    )
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
SNAPSHOT = tuple((sql, None) for _, sql in QUERIES)  # the statements as `Database.snapshot` takes them
