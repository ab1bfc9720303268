"""`POST /api/items/jira-sync` (admin and employee): contract-core §7 I3, spec README fix 12.

Kept: the request fields, the 400/404/500 messages, the response shape, the item and assignment rows it writes
(item type 4, task 27, the `assigments` table), the per-project status rows it creates, the assignee match on
first name + rest of the display name.
Fixed (core 16):
- every issue is synced: `/rest/api/3/search/jql` is paged with `nextPageToken` until the last page;
- the Jira project must match the project name exactly (ignoring case), otherwise 404 (no first-result fallback);
- every HTTP call has a timeout and a bounded retry (connection errors, timeouts, 5xx and 429, whose
  `Retry-After` is honoured); Jira unreachable or failing gives 502 `{"error": ...}`;
- no database connection is held during the HTTP calls: the project is read first, then all of Jira, then one
  transaction writes, with the project row locked so concurrent syncs (and item creation) cannot interleave;
- idempotent: an item is only rewritten (and `updated_at` bumped) when something changed, and a sync that
  changes nothing rolls back its read-only transaction, so it emits no `db-changed`;
- the creator of new items comes from the token (core 8); timestamps are all UTC (session time zone +00:00).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import logging
import math
from dataclasses import dataclass
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import Response

from ccsm_api import inputs
from ccsm_api.inputs import SqlNumber
from ccsm_api.items import created_by
from ccsm_core.codec import json_response, read_object, utc_wall_time
from ccsm_core.db import Database, Row
from ccsm_core.errors import ApiError
from ccsm_core.guard import STAFF
from ccsm_core.params import js_trim, query_value
from ccsm_core.settings import Settings

log = logging.getLogger("ccsm.jira")

JIRA_ITEM_TYPE_ID = 4  # ref_item_types "Jira Issue" (contract-core §8.10: keep the hard-coded ids)
JIRA_TASK_ID = 27  # tasks "Jira ticket work"
ISSUE_FIELDS = "key,assignee,status,created"


@dataclass(frozen=True, slots=True)
class JiraPolicy:
    """How patient the sync is with Jira. A test may put another one on `app.state.jira_policy`."""

    timeout_s: float = 10.0  # connect/read/write/pool, per call
    attempts: int = 3  # per call, including the first
    backoff_s: float = 0.5  # doubled per retry when Jira gives no Retry-After
    max_retry_after_s: float = 30.0  # a longer Retry-After fails the sync (502) instead of stalling it
    page_size: int = 100
    max_pages: int = 1000  # 100 000 issues; a cursor that never ends is a 502, not an endless loop


DEFAULT_POLICY = JiraPolicy()


class JiraUnavailable(Exception):
    """Jira could not be reached or kept failing: the request answers 502."""


@dataclass(frozen=True, slots=True)
class Issue:
    key: str
    status: str | None
    assignee: str | None
    created: dt.datetime | None


def retry_after_seconds(value: str | None) -> float | None:
    """`Retry-After` as delta-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        seconds = (when - dt.datetime.now(dt.UTC)).total_seconds()
    if math.isnan(seconds):
        return None
    return max(0.0, seconds)


class JiraClient:
    def __init__(self, http: httpx.AsyncClient, base_url: str, policy: JiraPolicy) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")
        self.policy = policy

    async def get(self, path: str, params: dict[str, Any]) -> Any:
        """One GET with the policy's timeout and bounded retry; the parsed JSON body of a 2xx answer."""
        url = self.base_url + path
        p = self.policy
        for attempt in range(1, p.attempts + 1):
            last = attempt == p.attempts
            delay = p.backoff_s * 2 ** (attempt - 1)
            try:
                # httpx's timeout bounds each phase; this bounds the whole call (a server that drips bytes).
                async with asyncio.timeout(p.timeout_s * 2):
                    resp = await self.http.get(url, params=params)
            except (httpx.TransportError, TimeoutError) as exc:  # time-outs, refused connections, broken reads
                log.warning("jira call failed", extra={"path": path, "attempt": attempt, "error": type(exc).__name__})
                if last:
                    raise JiraUnavailable(type(exc).__name__) from None
                await asyncio.sleep(delay)  # back-off before the retry
                continue
            if resp.status_code == 429 or resp.status_code >= 500:
                log.warning("jira call refused", extra={"path": path, "attempt": attempt, "status": resp.status_code})
                if last:
                    raise JiraUnavailable(f"HTTP {resp.status_code}")
                wait = retry_after_seconds(resp.headers.get("retry-after"))
                if wait is None:
                    wait = delay
                if wait > p.max_retry_after_s:
                    raise JiraUnavailable(f"Retry-After {wait:.0f}s")
                await asyncio.sleep(wait)  # Jira asked us to wait this long (429 Retry-After)
                continue
            if not 200 <= resp.status_code < 300:
                log.warning("jira call rejected", extra={"path": path, "status": resp.status_code})
                raise JiraUnavailable(f"HTTP {resp.status_code}")
            try:
                return resp.json()
            except ValueError:
                raise JiraUnavailable("invalid JSON") from None
        raise JiraUnavailable("no attempts")  # pragma: no cover - attempts >= 1

    async def find_project_key(self, name: str) -> str | None:
        """The key of the Jira project whose name equals `name` ignoring case, across every result page."""
        wanted = name.lower()
        start = 0
        for _ in range(self.policy.max_pages):
            page = await self.get("/rest/api/3/project/search", {"query": name, "startAt": start, "maxResults": 50})
            values = page.get("values") if isinstance(page, dict) else None
            if not isinstance(values, list) or not values:
                return None
            for project in values:
                if (
                    isinstance(project, dict)
                    and isinstance(project.get("name"), str)
                    and project["name"].lower() == wanted
                    and isinstance(project.get("key"), str)
                    and project["key"]
                ):
                    return str(project["key"])
            if page.get("isLast", True) is not False:
                return None
            start += len(values)
        raise JiraUnavailable("too many project pages")

    async def all_issues(self, project_key: str) -> list[dict[str, Any]]:
        """Every issue of the project, following `nextPageToken` until the last page."""
        escaped = project_key.replace("\\", "\\\\").replace('"', '\\"')
        params: dict[str, Any] = {
            "jql": f'project="{escaped}"',
            "fields": ISSUE_FIELDS,
            "maxResults": self.policy.page_size,
        }
        issues: list[dict[str, Any]] = []
        seen_tokens: set[str] = set()
        for _ in range(self.policy.max_pages):
            page = await self.get("/rest/api/3/search/jql", params)
            if not isinstance(page, dict):
                raise JiraUnavailable("unexpected search answer")
            batch = page.get("issues")
            if isinstance(batch, list):
                issues.extend(i for i in batch if isinstance(i, dict))
            token = page.get("nextPageToken")
            if page.get("isLast") is True or not isinstance(token, str) or not token:
                return issues
            if token in seen_tokens:
                raise JiraUnavailable("repeated page token")
            seen_tokens.add(token)
            params = {**params, "nextPageToken": token}
        raise JiraUnavailable("too many issue pages")


def _text(value: Any) -> str:
    return js_trim(value) if isinstance(value, str) else ""


def parse_created(value: Any) -> dt.datetime | None:
    """Jira's `created` (`2026-01-12T11:00:00.000+0000`) as a naive UTC datetime, or None."""
    if not isinstance(value, str) or not value.strip():
        return None
    parsed = utc_wall_time(value.strip().replace("Z", "+00:00"))
    return None if parsed is None else parsed.replace(microsecond=0)


def parse_issue(raw: dict[str, Any]) -> Issue | None:
    key = _text(raw.get("key"))
    if not key:
        return None
    fields = raw.get("fields") if isinstance(raw.get("fields"), dict) else {}
    assert isinstance(fields, dict)
    status = fields.get("status")
    assignee = fields.get("assignee")
    status_name = _text(status.get("name")) if isinstance(status, dict) else ""
    display = assignee.get("displayName") if isinstance(assignee, dict) else None
    return Issue(
        key=key,
        status=status_name or None,
        assignee=display if isinstance(display, str) and display else None,
        created=parse_created(fields.get("created")),
    )


def split_name(display: str | None) -> tuple[str, str] | None:
    parts = (display or "").split()
    if len(parts) < 2:
        return None
    return parts[0], " ".join(parts[1:])


class _Unchanged(Exception):
    """Raised inside the write transaction when the sync had nothing to write: roll back, emit nothing."""


def _policy(request: Request) -> JiraPolicy:
    policy = getattr(request.app.state, "jira_policy", None)
    return policy if isinstance(policy, JiraPolicy) else DEFAULT_POLICY


async def jira_sync(request: Request) -> Response:
    principal = await request.state.guard.require(request, STAFF)
    body = await read_object(request)
    raw_project = body.get("projectId")
    if raw_project is None:
        raw_project = query_value(request, "projectId")
    project_id = inputs.truthy_number(raw_project, "projectId is required")
    settings: Settings = request.state.settings
    if not (settings.jira_base_url and settings.jira_email and settings.jira_api_token):
        raise ApiError(500, "Jira credentials are not configured")
    user_id = created_by(principal, body)
    db: Database = request.state.db

    project = await db.fetch_one("SELECT id, name, is_jira FROM projects WHERE id = %s", (project_id,))
    if project is None:
        raise ApiError(404, "Project not found")
    if project["is_jira"] != 1:
        raise ApiError(400, "Project is not Jira-connected")

    # Jira, with no database connection held.
    policy = _policy(request)
    try:
        async with httpx.AsyncClient(
            auth=httpx.BasicAuth(settings.jira_email, settings.jira_api_token),
            headers={"Accept": "application/json"},
            timeout=httpx.Timeout(policy.timeout_s),
            follow_redirects=False,
        ) as http:
            client = JiraClient(http, settings.jira_base_url, policy)
            project_key = await client.find_project_key(str(project["name"] or ""))
            if project_key is None:
                raise ApiError(404, "Matching Jira project not found")
            raw_issues = await client.all_issues(project_key)
    except JiraUnavailable as exc:
        log.warning("jira sync failed", extra={"projectId": project["id"], "reason": str(exc)})
        raise ApiError(502, "Jira is unavailable") from None

    issues: list[Issue] = []
    seen: set[str] = set()
    for raw in raw_issues:
        issue = parse_issue(raw)
        if issue is not None and issue.key not in seen:
            seen.add(issue.key)
            issues.append(issue)

    try:
        async with db.transaction() as cur:
            writes = await write_issues(cur, int(project["id"]), issues, user_id)
            if writes == 0:
                raise _Unchanged
    except _Unchanged:
        pass
    except Exception as exc:
        code = inputs.error_code(exc)
        if code in (inputs.ER_NO_REFERENCED_ROW, inputs.ER_NO_REFERENCED_ROW_2):
            raise ApiError(400, "userId does not refer to a user") from None
        raise
    return json_response(
        {
            "projectKey": project_key,
            "count": len(issues),
            "issues": [{"key": i.key, "status": i.status, "assignee": i.assignee} for i in issues],
        }
    )


async def write_issues(cur: Any, project_id: int, issues: list[Issue], user_id: SqlNumber | None) -> int:
    """Apply the issues to the project's items, statuses and assignments; the number of rows written."""
    await lock_project(cur, project_id)
    statuses = {str(r["label"]): int(r["id"]) for r in await select_statuses(cur, project_id)}
    items = {str(r["code"]): r for r in await select_project_items(cur, project_id)}
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)
    writes = 0
    for issue in issues:
        status_id: int | None = None
        if issue.status:
            status_id = statuses.get(issue.status)
            if status_id is None:
                status_id = await insert_status(cur, issue.status, project_id)
                statuses[issue.status] = status_id
                writes += 1
        row = items.get(issue.key)
        if row is not None:
            item_id = int(row["id"])
            if (
                row["label"] != issue.key
                or row["item_type_id"] != JIRA_ITEM_TYPE_ID
                or row["item_category_id"] is not None
                or row["unit_type_id"] is not None
                or row["status_id"] != status_id
            ):
                await update_item(cur, item_id, issue.key, status_id)
                writes += 1
        else:
            item_id = await insert_item(cur, issue, project_id, status_id, user_id, issue.created or now)
            items[issue.key] = {"id": item_id}
            writes += 1
        name = split_name(issue.assignee)
        if name is not None:
            assignee_id = await find_user_by_name(cur, *name)
            if assignee_id is not None and not await assignment_exists(cur, assignee_id, project_id, item_id):
                await insert_assignment(cur, assignee_id, project_id, item_id)
                writes += 1
    return writes


# --- queries ----------------------------------------------------------------------------------------------------


async def lock_project(cur: Any, project_id: int) -> None:
    await cur.execute("SELECT id FROM projects WHERE id = %s FOR UPDATE", (project_id,))
    await cur.fetchone()


async def select_statuses(cur: Any, project_id: int) -> list[Row]:
    await cur.execute("SELECT id, label FROM ref_item_status WHERE project_id = %s ORDER BY id", (project_id,))
    return list(await cur.fetchall())


async def select_project_items(cur: Any, project_id: int) -> list[Row]:
    await cur.execute(
        "SELECT id, code, label, item_type_id, item_category_id, unit_type_id, status_id "
        "FROM items WHERE project_id = %s ORDER BY id",
        (project_id,),
    )
    return list(await cur.fetchall())


async def insert_status(cur: Any, label: str, project_id: int) -> int:
    await cur.execute("INSERT INTO ref_item_status (label, project_id) VALUES (%s, %s)", (label, project_id))
    return int(cur.lastrowid)


async def update_item(cur: Any, item_id: int, key: str, status_id: int | None) -> None:
    await cur.execute(
        "UPDATE items SET label = %s, item_type_id = %s, item_category_id = NULL, unit_type_id = NULL, "
        "status_id = %s, updated_at = NOW() WHERE id = %s",
        (key, JIRA_ITEM_TYPE_ID, status_id, item_id),
    )


async def insert_item(
    cur: Any, issue: Issue, project_id: int, status_id: int | None, user_id: SqlNumber | None, created: dt.datetime
) -> int:
    await cur.execute(
        "INSERT INTO items (code, label, project_id, item_type_id, item_category_id, unit_type_id, status_id, "
        "created_by_user_id, created_at) VALUES (%s, %s, %s, %s, NULL, NULL, %s, %s, %s)",
        (issue.key, issue.key, project_id, JIRA_ITEM_TYPE_ID, status_id, user_id, created),
    )
    return int(cur.lastrowid)


async def find_user_by_name(cur: Any, first: str, last: str) -> int | None:
    await cur.execute(
        "SELECT id FROM users WHERE LOWER(first_name) = LOWER(%s) AND LOWER(last_name) = LOWER(%s) LIMIT 1",
        (first, last),
    )
    row = await cur.fetchone()
    return int(row["id"]) if row else None


async def assignment_exists(cur: Any, user_id: int, project_id: int, item_id: int) -> bool:
    await cur.execute(
        "SELECT id FROM assigments WHERE user_id = %s AND project_id = %s AND item_id = %s AND task_id = %s LIMIT 1",
        (user_id, project_id, item_id, JIRA_TASK_ID),
    )
    return await cur.fetchone() is not None


async def insert_assignment(cur: Any, user_id: int, project_id: int, item_id: int) -> None:
    await cur.execute(
        "INSERT INTO assigments (user_id, project_id, item_id, task_id, role_id, is_accepted) "
        "VALUES (%s, %s, %s, %s, NULL, 0)",
        (user_id, project_id, item_id, JIRA_TASK_ID),
    )
