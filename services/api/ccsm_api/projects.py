"""`/api/projects` (contract-work §2, P1-P5): the project list, the edit form's configuration, and saving it.

Kept: paths, bodies, statuses and messages; P4 creates exactly what the old handler created.
Fixed so that a configuration read by P2 and saved unchanged by P5 leaves every table byte-for-byte the same:
- I-9: P2 also returns project tasks that have no role rows (`rolesId: []`) and their task data, so P5 keeps them;
- I-10: P2 returns each status's id (`statusId`, an added field); P5 matches statuses by that id, then by label,
  then (a rename in the current web form, which does not send ids back) by an identical set of linked tasks, so a
  rename keeps the id and the items in that status keep it; deleted statuses are also cleared from
  `cfs_items`/`im_items`; rows repeating a label are merged instead of overriding each other;
- I-11: an absent, null or 0 `project_status_id` leaves the status as it is on PUT (the column is NOT NULL; the
  form sends null when nothing was chosen), and is the default (1) on POST;
- I-12: unknown ids are 404 on PUT and PUT /jira;
- I-13: task-data rows are updated in place (ids and `created_at` survive; unchanged rows are not written), the
  definition's own type picks the column, `...Z` datetimes and JSON round-trip, `is_jira` is stored as 0/1;
- I-33: repeated team / role pairs in a payload are stored once;
- unknown referenced ids (users, roles, tasks, types, customers, definitions) are a 400 instead of a 500.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pymysql
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from ccsm_core.codec import json_response, read_object
from ccsm_core.db import Database
from ccsm_core.errors import ApiError
from ccsm_core.guard import STAFF
from ccsm_core.params import js_number, normalize_string, positive_int
from ccsm_core.response_cache import PER_ROLE
from ccsm_core.service import route

from .task_values import TASK_DATA_COLUMNS, VALUE_COLUMNS, normalize_type, parse_value, required_flag

NAME_REQUIRED = "Project name is required"
BAD_REFERENCE = "Invalid reference in project data"


def _project_id(request: Request) -> int:
    n = js_number(request.path_params["id"])
    if n != n or n == 0:
        raise ApiError(400, "Invalid project id")
    return int(n) if n.is_integer() and abs(n) < 2**63 else -1


# --- P1 / P2 ----------------------------------------------------------------------------------------------------


async def list_projects(request: Request) -> Response:
    await request.state.guard.require(request, STAFF)
    return json_response(await request.state.db.fetch_all(LIST_SQL))


def _typed_value(value_type: Any, row: dict[str, Any]) -> Any:
    column = TASK_DATA_COLUMNS.get(normalize_type(value_type))
    return row[column] if column else None


async def get_project(request: Request) -> Response:
    await request.state.guard.require(request, STAFF)
    project_id = _project_id(request)
    db: Database = request.state.db
    # One snapshot for all six parts (they used to be read separately and could disagree), in one round trip.
    args = (project_id,)
    projects, team, role_rows, project_tasks, data_rows, status_rows = await db.snapshot(
        [(PROJECT_SQL, args), (TEAM_SQL, args), (TASK_ROLES_SQL, args), (PROJECT_TASKS_SQL, args),
         (TASK_DATA_SQL, args), (STATUS_LINKS_SQL, args)]
    )  # fmt: skip
    if not projects:
        raise ApiError(404, "Project not found")
    project = projects[0]

    first_pt: dict[int, dict[str, Any]] = {}
    for pt in project_tasks:
        first_pt.setdefault(pt["task_id"], pt)
    tasks: dict[int, dict[str, Any]] = {}
    for row in role_rows:
        entry = tasks.get(row["taskId"])
        if entry is None:
            first = first_pt.get(row["taskId"])
            entry = tasks[row["taskId"]] = {
                "taskId": row["taskId"],
                "taskTitle": row["taskTitle"],
                "categoryId": row["categoryId"],
                "rolesId": [],
                "taskData": [],
                "projectTaskId": first["id"] if first else None,
            }
        entry["rolesId"].append(row["roleId"])
    for pt in project_tasks:  # I-9: project tasks without any role row
        if pt["task_id"] not in tasks:
            tasks[pt["task_id"]] = {
                "taskId": pt["task_id"],
                "taskTitle": pt["taskTitle"],
                "categoryId": pt["categoryId"],
                "rolesId": [],
                "taskData": [],
                "projectTaskId": pt["id"],
            }
    for row in data_rows:
        entry = tasks.get(row["task_id"])
        if entry is not None and entry["projectTaskId"] == row["project_task_id"]:
            entry["taskData"].append(
                {
                    "id": row["id"],
                    "dataDefId": row["data_def_id"],
                    "valueType": row["value_type"],
                    "value": _typed_value(row["value_type"], row),
                    "isRequired": 1 if row["is_required"] == 1 else 0,
                }
            )
    statuses: dict[int, dict[str, Any]] = {}
    for row in status_rows:
        status = statuses.get(row["id"])
        if status is None:
            status = statuses[row["id"]] = {
                "statusText": row["label"],
                "taskIds": [],
                "applyAfterFinish": 0,
                "statusId": row["id"],
            }
        if row["task_id"] is not None:
            status["taskIds"].append(row["task_id"])
            if row["apply_after_finish"] == 1:
                status["applyAfterFinish"] = 1
    project["isJira"] = project.pop("is_jira")
    return json_response(
        {"project": project, "team": team, "tasks": list(tasks.values()), "itemTracking": list(statuses.values())}
    )


# --- P3 ---------------------------------------------------------------------------------------------------------


async def set_jira(request: Request) -> Response:
    await request.state.guard.require(request, STAFF)
    project_id = _project_id(request)
    body = await read_object(request)
    value = body.get("isJira")
    if value is None:
        value = body.get("is_jira")
    if value is None:
        raise ApiError(400, "isJira is required")
    flag = _jira_flag(value)
    async with request.state.db.transaction() as cur:
        matched = await cur.execute(SET_JIRA_SQL, (flag, project_id))
        if matched == 0:
            raise ApiError(404, "Project not found")  # I-12: used to answer 200 for any id
    return json_response({"id": project_id})


def _jira_flag(value: Any) -> int:
    n = js_number(value)
    return 1 if (n == n and n != 0) else 0


# --- P4 / P5: the payload ---------------------------------------------------------------------------------------


@dataclass
class TaskSpec:
    task_id: int
    roles: dict[int, None]  # an ordered set: the payload's order, each role once (I-33)
    data: list[dict[str, Any]]


@dataclass
class StatusSpec:
    label: str
    status_id: int | None
    links: dict[int, int] = field(default_factory=dict)  # task id -> apply_after_finish


@dataclass
class ProjectFields:
    name: str
    type_code: str | None
    item_id: int | None
    unit_id: int | None
    status_id: int | None
    customer_id: int | None
    is_jira: int | None


def _ref(value: Any, what: str) -> int | None:
    """Falsy -> NULL (`x || null`), otherwise a positive whole number or a 400 (used to be a 500 or an orphan)."""
    if not value:
        return None
    n = positive_int(value)
    if n is None or n > 2**32 - 1:
        raise ApiError(400, f"Invalid {what}")
    return n


# How many entries each list of a P4/P5 payload may hold (issue 12 item 2). Checked before any element is looked
# at, so a body cannot buy more work than these allow; the form sends a project's catalog tasks (tens), its
# project roles (ref_project_roles: a handful) and its task-data definitions (tens), so each is far above use.
MAX_ROWS = {"team": 1000, "tasks": 1000, "itemTracking": 1000}
MAX_PER_ROW = {"tasks": {"rolesId": 100, "taskData": 100}, "itemTracking": {"taskRefs": 1000}}


def _list(body: dict[str, Any], name: str) -> list[Any]:
    value = body.get(name)
    if value is None:
        return []
    if not isinstance(value, list):
        raise ApiError(400, f"{name} must be an array")  # used to throw inside the transaction: 500
    return value


def _check_sizes(body: dict[str, Any]) -> None:
    """Every list of the payload within its cap, or a 400 naming it; O(rows), before any other work."""
    for name, most in MAX_ROWS.items():
        rows = _list(body, name)
        if len(rows) > most:
            raise ApiError(400, f"{name} must have at most {most} entries")
        inner = MAX_PER_ROW.get(name, {})
        for row in rows if inner else ():
            if not isinstance(row, dict):
                continue
            for field_name, field_most in inner.items():
                value = row.get(field_name)
                if isinstance(value, list) and len(value) > field_most:
                    raise ApiError(400, f"{name}[].{field_name} must have at most {field_most} entries")


def _fields(body: dict[str, Any]) -> ProjectFields:
    project = body.get("project")
    if not isinstance(project, dict) or not project.get("name"):
        raise ApiError(400, NAME_REQUIRED)
    name = project["name"]
    if isinstance(name, bool) or not isinstance(name, str | int | float):
        raise ApiError(400, NAME_REQUIRED)
    type_code = project.get("type_code") or None
    if type_code is not None and not isinstance(type_code, str):
        raise ApiError(400, "Invalid type_code")
    jira = project.get("is_jira")
    if jira is None:
        jira = project.get("isJira")
    return ProjectFields(
        name=name if isinstance(name, str) else normalize_string(name),
        type_code=type_code,
        item_id=_ref(project.get("item_id"), "item_id"),
        unit_id=_ref(project.get("unit_id"), "unit_id"),
        status_id=_ref(project.get("project_status_id"), "project_status_id"),
        customer_id=_ref(project.get("customer_id"), "customer_id"),
        is_jira=None if jira is None else _jira_flag(jira),
    )


def _team(body: dict[str, Any]) -> dict[tuple[int, int], None]:
    """The (user, role) pairs in payload order, each once (I-33): an ordered set."""
    pairs: dict[tuple[int, int], None] = {}
    for row in _list(body, "team"):
        if not isinstance(row, dict) or not row.get("userId") or not row.get("roleId"):
            continue
        pairs[(_ref(row["userId"], "userId") or 0, _ref(row["roleId"], "roleId") or 0)] = None
    return pairs


async def _resolve_tasks(cur: Any, body: dict[str, Any]) -> tuple[list[TaskSpec], dict[str, int]]:
    """Step 4 of P4: catalog tasks for new titled rows (tempId -> new id), then the resolved task list."""
    resolved: dict[int, TaskSpec] = {}  # by task id, in payload order
    temp_ids: dict[str, int] = {}
    default_category: int | None = None
    for element in _list(body, "tasks"):
        if not isinstance(element, dict):
            continue
        task_id = _ref(element.get("taskId"), "taskId")
        if task_id is None and element.get("taskTitle"):
            category = _ref(element.get("categoryId"), "categoryId")
            if category is None:
                if default_category is None:
                    await cur.execute(MIN_CATEGORY_SQL)
                    row = await cur.fetchone()
                    if row is None or row["id"] is None:
                        raise ApiError(400, "No task category exists for a new task")
                    default_category = int(row["id"])
                category = default_category
            await cur.execute(INSERT_TASK_SQL, (normalize_string(element["taskTitle"]), category))
            task_id = int(cur.lastrowid)
            temp = element.get("taskTempId")
            if temp is not None and temp != "":
                temp_ids[normalize_string(temp)] = task_id
        if task_id is None:
            continue
        roles_value, data_value = element.get("rolesId"), element.get("taskData")
        roles_raw: list[Any] = roles_value if isinstance(roles_value, list) else []
        data_raw: list[Any] = data_value if isinstance(data_value, list) else []
        roles: dict[int, None] = {}
        for role in roles_raw:
            role_id = _ref(role, "roleId")
            if role_id is not None:
                roles[role_id] = None
        existing = resolved.get(task_id)
        if existing is not None:  # a task listed twice: one task, the union of its roles, its first data
            existing.roles.update(roles)
            continue
        resolved[task_id] = TaskSpec(task_id, roles, [d for d in data_raw if isinstance(d, dict)])
    return list(resolved.values()), temp_ids


def _statuses(body: dict[str, Any], temp_ids: dict[str, int]) -> tuple[list[StatusSpec], set[str]]:
    """Item-tracking rows merged by label; returns the rows with resolved tasks and every wanted label."""
    by_label: dict[str, StatusSpec] = {}
    wanted: set[str] = set()
    for row in _list(body, "itemTracking"):
        if not isinstance(row, dict):
            continue
        label = normalize_string(row.get("statusText"))
        if not label:
            continue
        wanted.add(label)
        moment = 1 if row.get("statusMoment") == "task_finished" else 0
        spec = by_label.get(label)
        if spec is None:
            spec = by_label[label] = StatusSpec(label, positive_int(row.get("statusId")))
        refs_value = row.get("taskRefs")
        refs: list[Any] = refs_value if isinstance(refs_value, list) else []
        for ref in refs:
            if not isinstance(ref, dict):
                continue
            task_id = positive_int(ref.get("taskId")) if ref.get("taskId") else None
            if task_id is None and ref.get("taskTempId") is not None:
                task_id = temp_ids.get(normalize_string(ref["taskTempId"]))
            if task_id is not None:
                spec.links.setdefault(task_id, moment)
    return [s for s in by_label.values() if s.links], wanted


# --- P4 / P5: the writes ----------------------------------------------------------------------------------------


async def _definitions(cur: Any) -> dict[int, str]:
    await cur.execute(DEFINITIONS_SQL)
    return {int(r["id"]): r["value_type"] for r in await cur.fetchall()}


def _data_rows(task: TaskSpec, definitions: dict[int, str]) -> dict[int, tuple[str, Any, int]]:
    """data_def_id -> (column, parsed value, is_required); the definition's type decides the column (I-13)."""
    out: dict[int, tuple[str, Any, int]] = {}
    for element in task.data:
        n = js_number(element.get("dataDefId"))
        if not (math.isfinite(n) and n > 0 and n.is_integer()):
            continue
        def_id = int(n)
        if def_id not in definitions:
            raise ApiError(400, BAD_REFERENCE)
        kind = normalize_type(definitions[def_id])
        if kind not in TASK_DATA_COLUMNS:
            supplied = normalize_type(element.get("valueType"))
            kind = supplied if supplied in TASK_DATA_COLUMNS else "varchar"
        out[def_id] = (
            TASK_DATA_COLUMNS[kind],
            parse_value(kind, element.get("value")),
            required_flag(element.get("isRequired")),
        )
    return out


# The largest payload the caps allow writes or removes thousands of rows; one statement per row would hold the
# transaction (and its project lock and pooled connection) for seconds (issue 12 items 2 and 9).
ID_CHUNK = 1000  # ids per `IN (...)` list


async def insert_many(cur: Any, sql: str, rows: list[tuple[Any, ...]]) -> None:
    """`sql`, a one-row `INSERT ... VALUES (%s, ...)`, as one multi-row INSERT per ID_CHUNK rows."""
    head, _, group = sql.rpartition("VALUES")
    for start in range(0, len(rows), ID_CHUNK):
        chunk = rows[start : start + ID_CHUNK]
        values = ", ".join([group.strip()] * len(chunk))  # placeholders only: every value is bound
        await cur.execute(f"{head}VALUES {values}", [v for row in chunk for v in row])


async def for_ids(cur: Any, sql: str, ids: list[int], *tail: Any) -> None:
    """`sql`, whose `{marks}` is an `IN` list, for `ids` (ID_CHUNK at a time), with `tail` bound after them."""
    for start in range(0, len(ids), ID_CHUNK):
        chunk = ids[start : start + ID_CHUNK]
        await cur.execute(sql.format(marks=", ".join(["%s"] * len(chunk))), (*chunk, *tail))


async def _write_task_data(
    cur: Any, project_task_id: int, rows: dict[int, tuple[str, Any, int]], new: bool = False
) -> None:
    existing: dict[int, int] = {}
    if not new:  # a project task inserted by this request has no data yet
        await cur.execute(PTD_OF_PROJECT_TASK_SQL, (project_task_id,))
        stale: list[int] = []
        for row in await cur.fetchall():
            if row["data_def_id"] in rows and row["data_def_id"] not in existing:
                existing[row["data_def_id"]] = row["id"]
            else:
                stale.append(row["id"])
        await for_ids(cur, DELETE_PTD_SQL, stale)
    inserts = []
    for def_id, (column, value, required) in rows.items():
        values = [value if c == column else None for c in VALUE_COLUMNS]
        if def_id in existing:
            await cur.execute(UPDATE_PTD_SQL, (required, *values, existing[def_id]))
        else:
            inserts.append((project_task_id, def_id, required, *values))
    await insert_many(cur, INSERT_PTD_SQL, inserts)


async def _sync(cur: Any, project_id: int, body: dict[str, Any], creating: bool) -> None:
    team = _team(body)
    tasks, temp_ids = await _resolve_tasks(cur, body)
    statuses, wanted_labels = _statuses(body, temp_ids)
    definitions = await _definitions(cur)
    data_by_task = {t.task_id: _data_rows(t, definitions) for t in tasks}

    # team
    await cur.execute(TEAM_ROWS_SQL, (project_id,))
    team_rows = await cur.fetchall()
    have = {(r["user_id"], r["project_role_id"]) for r in team_rows}
    await for_ids(
        cur, DELETE_TEAM_SQL, [r["id"] for r in team_rows if (r["user_id"], r["project_role_id"]) not in team]
    )
    await insert_many(cur, INSERT_TEAM_SQL, [(project_id, u, r) for u, r in team if (u, r) not in have])

    # project_task_roles
    wanted_roles = {(t.task_id, r): None for t in tasks for r in t.roles}
    await cur.execute(PTR_ROWS_SQL, (project_id,))
    ptr_rows = await cur.fetchall()
    have = {(r["task_id"], r["role_id"]) for r in ptr_rows}
    await for_ids(cur, DELETE_PTR_SQL, [r["id"] for r in ptr_rows if (r["task_id"], r["role_id"]) not in wanted_roles])
    await insert_many(cur, INSERT_PTR_SQL, [(project_id, t, r) for t, r in wanted_roles if (t, r) not in have])

    # project_tasks (+ their data)
    await cur.execute(PT_ROWS_SQL, (project_id,))
    pt_rows = await cur.fetchall()
    listed = {t.task_id for t in tasks}
    first_pt: dict[int, int] = {}
    for r in pt_rows:
        if r["task_id"] in listed:
            first_pt.setdefault(r["task_id"], r["id"])
    unlisted = [r["id"] for r in pt_rows if r["task_id"] not in listed]
    await for_ids(cur, DELETE_PTD_OF_PT_SQL, unlisted)
    await for_ids(cur, DELETE_PT_SQL, unlisted)
    for position, task in enumerate(tasks):
        pt_id = first_pt.get(task.task_id)
        if pt_id is None:
            await cur.execute(INSERT_PT_SQL, (project_id, task.task_id, position + 1))
            await _write_task_data(cur, int(cur.lastrowid), data_by_task[task.task_id], new=True)
        else:
            await _write_task_data(cur, pt_id, data_by_task[task.task_id])

    # item statuses
    await cur.execute(STATUS_LINKS_SQL, (project_id,))
    current: dict[int, dict[str, Any]] = {}
    for row in await cur.fetchall():
        entry = current.setdefault(row["id"], {"label": row["label"], "links": {}})
        if row["task_id"] is not None:
            entry["links"][row["task_id"]] = (row["link_id"], row["apply_after_finish"])
    matched, unmatched = _match_statuses(current, statuses, wanted_labels)
    kept_by_label = {  # labelled rows without resolvable tasks keep their status untouched
        i for i, s in current.items() if i not in matched and s["label"] in wanted_labels
    }
    removed = [i for i in current if i not in matched and i not in kept_by_label]
    await for_ids(cur, CLEAR_ITEM_STATUS_SQL, removed)
    await for_ids(cur, CLEAR_CFS_STATUS_SQL, removed, project_id)
    await for_ids(cur, CLEAR_IM_STATUS_SQL, removed, project_id)
    await for_ids(cur, DELETE_LINKS_SQL, removed)
    await for_ids(cur, DELETE_STATUS_SQL, removed)
    for sid, spec in matched.items():
        if current[sid]["label"] != spec.label:
            await cur.execute(RENAME_STATUS_SQL, (spec.label, sid))
        links = current[sid]["links"]
        await for_ids(cur, DELETE_LINK_SQL, [link_id for t, (link_id, _) in links.items() if t not in spec.links])
        for task_id, (link_id, moment) in links.items():
            if task_id in spec.links and spec.links[task_id] != moment:
                await cur.execute(UPDATE_LINK_SQL, (spec.links[task_id], link_id))
        await insert_many(cur, INSERT_LINK_SQL, [(sid, t, m) for t, m in spec.links.items() if t not in links])
    for spec in unmatched:
        await cur.execute(INSERT_STATUS_SQL, (spec.label, project_id))
        sid = int(cur.lastrowid)
        await insert_many(cur, INSERT_LINK_SQL, [(sid, t, m) for t, m in spec.links.items()])


def _match_statuses(
    current: dict[int, dict[str, Any]], statuses: list[StatusSpec], wanted_labels: set[str]
) -> tuple[dict[int, StatusSpec], list[StatusSpec]]:
    """Which stored status each payload status is (status id -> spec), and the specs that are new: by id, then by
    label, then (a rename in the form, which sends no ids) by an identical set of linked tasks among the statuses
    whose old label is no longer wanted. Candidates are looked up in indexes, so the cost is linear in the
    statuses and their links (issue 12 item 2)."""
    matched: dict[int, StatusSpec] = {}
    by_id_missed: list[StatusSpec] = []
    for spec in statuses:  # by id
        if spec.status_id is not None and spec.status_id in current and spec.status_id not in matched:
            matched[spec.status_id] = spec
        else:
            by_id_missed.append(spec)
    by_label: dict[str, list[int]] = {}
    for stored_id, stored in current.items():
        by_label.setdefault(stored["label"], []).append(stored_id)
    by_label_missed: list[StatusSpec] = []
    for spec in by_id_missed:  # by label: the first stored status of that label not matched yet
        found = next((i for i in by_label.get(spec.label, ()) if i not in matched), None)
        if found is None:
            by_label_missed.append(spec)
        else:
            matched[found] = spec
    by_links: dict[frozenset[int], list[int]] = {}
    for stored_id, stored in current.items():
        if stored_id not in matched and stored["label"] not in wanted_labels:
            by_links.setdefault(frozenset(stored["links"]), []).append(stored_id)
    new: list[StatusSpec] = []
    for spec in by_label_missed:  # a rename: same linked tasks, old label no longer wanted
        found = next((i for i in by_links.get(frozenset(spec.links), ()) if i not in matched), None)
        if found is None:
            new.append(spec)
        else:
            matched[found] = spec
    return matched, new


def _integrity(exc: pymysql.err.MySQLError) -> ApiError:
    return ApiError(400, BAD_REFERENCE)


async def create_project(request: Request) -> Response:
    await request.state.guard.require(request, STAFF)
    body = await read_object(request)
    f = _fields(body)
    _check_sizes(body)
    db: Database = request.state.db
    try:
        async with db.transaction() as cur:
            await cur.execute(
                INSERT_PROJECT_SQL,
                (f.name, f.type_code, f.item_id, f.unit_id, f.status_id or 1, f.customer_id, f.is_jira or 0),
            )
            project_id = int(cur.lastrowid)
            await _sync(cur, project_id, body, creating=True)
    except (pymysql.err.IntegrityError, pymysql.err.DataError) as exc:
        raise _integrity(exc) from None
    return json_response({"id": project_id}, 201)


async def update_project(request: Request) -> Response:
    await request.state.guard.require(request, STAFF)
    project_id = _project_id(request)
    body = await read_object(request)
    f = _fields(body)
    _check_sizes(body)
    db: Database = request.state.db
    try:
        async with db.transaction() as cur:
            await cur.execute(LOCK_PROJECT_SQL, (project_id,))
            if await cur.fetchone() is None:
                raise ApiError(404, "Project not found")  # I-12
            await cur.execute(
                UPDATE_PROJECT_SQL,
                (f.name, f.type_code, f.item_id, f.unit_id, f.status_id, f.customer_id, f.is_jira, project_id),
            )
            await _sync(cur, project_id, body, creating=False)
    except (pymysql.err.IntegrityError, pymysql.err.DataError) as exc:
        raise _integrity(exc) from None
    return json_response({"id": project_id})


def routes() -> list[BaseRoute]:
    return [
        route("/api/projects", list_projects, ["GET"], cache=PER_ROLE),
        route("/api/projects", create_project, ["POST"]),
        route("/api/projects/{id}/jira", set_jira, ["PUT"]),
        route("/api/projects/{id}", get_project, ["GET"], cache=PER_ROLE),
        route("/api/projects/{id}", update_project, ["PUT"]),
    ]


# --- queries ----------------------------------------------------------------------------------------------------

LIST_SQL = """
SELECT p.id, p.name, p.type_code AS code, pt.label AS project_type, st.label AS project_status,
       c.name AS customer_name, p.is_jira AS isJira, p.created_at
FROM projects p
LEFT JOIN ref_project_types pt ON pt.code = p.type_code
LEFT JOIN ref_project_status st ON st.id = p.project_status_id
LEFT JOIN customers c ON c.id = p.customer_id
ORDER BY p.created_at DESC, p.id DESC
"""

PROJECT_SQL = """
SELECT id, name, type_code, item_id, unit_id, project_status_id, customer_id, is_jira FROM projects WHERE id = %s
"""
TEAM_SQL = "SELECT user_id AS userId, project_role_id AS roleId FROM project_users WHERE project_id = %s ORDER BY id"
# The old query had no ORDER BY and was served by the `(project_id, role_id)` index (idx_ptr_project_role), whose
# entries end with the primary key: rows in (role_id, id) order. Tasks are listed in the order of their first row
# and each task's rolesId in row order; the web form shows them so and saves rolesId back so (issue 16). Only a
# project holding most of the table (the seed's project 1) was read by a full scan instead, in id order.
TASK_ROLES_SQL = """
SELECT ptr.task_id AS taskId, ptr.role_id AS roleId, t.description AS taskTitle, t.category_id AS categoryId
FROM project_task_roles ptr JOIN tasks t ON t.id = ptr.task_id
WHERE ptr.project_id = %s
ORDER BY ptr.role_id, ptr.id
"""
PROJECT_TASKS_SQL = """
SELECT pt.id, pt.task_id, t.description AS taskTitle, t.category_id AS categoryId
FROM project_tasks pt JOIN tasks t ON t.id = pt.task_id
WHERE pt.project_id = %s
ORDER BY pt.order_number, pt.id
"""
TASK_DATA_SQL = """
SELECT ptd.id, ptd.project_task_id, pt.task_id, ptd.data_def_id, tdd.value_type, ptd.is_required,
       ptd.value_int, ptd.value_decimal, ptd.value_varchar, ptd.value_text, ptd.value_bool, ptd.value_date,
       ptd.value_datetime, ptd.value_customer_id, ptd.value_json
FROM project_task_data ptd
JOIN project_tasks pt ON pt.id = ptd.project_task_id
JOIN task_data_definitions tdd ON tdd.id = ptd.data_def_id
WHERE pt.project_id = %s
ORDER BY ptd.project_task_id, ptd.data_def_id, ptd.id
"""
STATUS_LINKS_SQL = """
SELECT ris.id, ris.label, ist.id AS link_id, ist.task_id, ist.apply_after_finish
FROM ref_item_status ris LEFT JOIN itemstatus_task ist ON ist.item_status_id = ris.id
WHERE ris.project_id = %s
ORDER BY ris.label, ris.id, ist.id
"""

SET_JIRA_SQL = "UPDATE projects SET is_jira = %s WHERE id = %s"
LOCK_PROJECT_SQL = "SELECT id FROM projects WHERE id = %s FOR UPDATE"
INSERT_PROJECT_SQL = """
INSERT INTO projects (name, type_code, item_id, unit_id, project_status_id, customer_id, is_jira)
VALUES (%s, %s, %s, %s, %s, %s, %s)
"""
UPDATE_PROJECT_SQL = """
UPDATE projects
SET name = %s, type_code = %s, item_id = %s, unit_id = %s, project_status_id = COALESCE(%s, project_status_id),
    customer_id = %s, is_jira = COALESCE(%s, is_jira)
WHERE id = %s
"""
MIN_CATEGORY_SQL = "SELECT MIN(id) AS id FROM ref_task_category"
INSERT_TASK_SQL = "INSERT INTO tasks (description, category_id) VALUES (%s, %s)"
DEFINITIONS_SQL = "SELECT id, value_type FROM task_data_definitions"

TEAM_ROWS_SQL = "SELECT id, user_id, project_role_id FROM project_users WHERE project_id = %s ORDER BY id"
DELETE_TEAM_SQL = "DELETE FROM project_users WHERE id IN ({marks})"
INSERT_TEAM_SQL = "INSERT INTO project_users (project_id, user_id, project_role_id) VALUES (%s, %s, %s)"
PTR_ROWS_SQL = "SELECT id, task_id, role_id FROM project_task_roles WHERE project_id = %s ORDER BY id"
DELETE_PTR_SQL = "DELETE FROM project_task_roles WHERE id IN ({marks})"
INSERT_PTR_SQL = "INSERT INTO project_task_roles (project_id, task_id, role_id) VALUES (%s, %s, %s)"
PT_ROWS_SQL = "SELECT id, task_id FROM project_tasks WHERE project_id = %s ORDER BY id"
DELETE_PTD_OF_PT_SQL = "DELETE FROM project_task_data WHERE project_task_id IN ({marks})"
DELETE_PT_SQL = "DELETE FROM project_tasks WHERE id IN ({marks})"
INSERT_PT_SQL = """
INSERT INTO project_tasks (project_id, task_id, order_number, only_after_number, is_mandatory, override_role_id)
VALUES (%s, %s, %s, NULL, 1, NULL)
"""
PTD_OF_PROJECT_TASK_SQL = "SELECT id, data_def_id FROM project_task_data WHERE project_task_id = %s ORDER BY id"
DELETE_PTD_SQL = "DELETE FROM project_task_data WHERE id IN ({marks})"
_SET_VALUES = ", ".join(f"{c} = %s" for c in VALUE_COLUMNS)
UPDATE_PTD_SQL = f"UPDATE project_task_data SET is_required = %s, {_SET_VALUES} WHERE id = %s"  # noqa: S608
INSERT_PTD_SQL = (
    f"INSERT INTO project_task_data (project_task_id, data_def_id, is_required, {', '.join(VALUE_COLUMNS)}) "  # noqa: S608
    f"VALUES (%s, %s, %s, {', '.join(['%s'] * len(VALUE_COLUMNS))})"
)

# `{marks}`: an id list bound by `for_ids`
CLEAR_ITEM_STATUS_SQL = "UPDATE items SET status_id = NULL WHERE status_id IN ({marks})"
CLEAR_CFS_STATUS_SQL = (
    "UPDATE cfs_items SET task_status_id = NULL WHERE task_status_id IN ({marks}) AND project_id = %s"
)
CLEAR_IM_STATUS_SQL = "UPDATE im_items SET task_status_id = NULL WHERE task_status_id IN ({marks}) AND project_id = %s"
DELETE_LINKS_SQL = "DELETE FROM itemstatus_task WHERE item_status_id IN ({marks})"
DELETE_STATUS_SQL = "DELETE FROM ref_item_status WHERE id IN ({marks})"
RENAME_STATUS_SQL = "UPDATE ref_item_status SET label = %s WHERE id = %s"
DELETE_LINK_SQL = "DELETE FROM itemstatus_task WHERE id IN ({marks})"
UPDATE_LINK_SQL = "UPDATE itemstatus_task SET apply_after_finish = %s WHERE id = %s"
INSERT_LINK_SQL = "INSERT INTO itemstatus_task (item_status_id, task_id, apply_after_finish) VALUES (%s, %s, %s)"
INSERT_STATUS_SQL = "INSERT INTO ref_item_status (label, project_id) VALUES (%s, %s)"
