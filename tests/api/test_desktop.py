"""`/api/desktop/*` (contract-work §4): the recorded responses, the client's idempotency contract, the facade's
authorisation (fix 5 / I-3) and atomic completions (I-4, I-5, I-6)."""

from __future__ import annotations

import threading
from typing import Any

import httpx
import pytest

from ccsm_core.settings import Settings
from tests.api.work_support import api, auth, call, query, replay, send, snapshot
from tests.harness import running

A1 = "9b0e7d3c-0000-4000-8000-0000000000a1"
A2 = "9b0e7d3c-0000-4000-8000-0000000000a2"


def test_reference_reads_match_the_recording(fresh_db: Settings) -> None:
    with api(fresh_db) as client:
        # The recording's project 1 also had items 9 and 10, created by the items probes before this call.
        rec = call("GET /api/desktop/project-items", 0)
        r = client.get(rec["url"], headers=auth(fresh_db, rec["who"]))
        assert r.json() == [row for row in rec["response"] if row["id"] < 9]
        r = client.get("/api/desktop/project-items?projectId=2&projectTypeId=2", headers=auth(fresh_db, "pnair"))
        assert [row["id"] for row in r.json()] == [5, 6]
        other = client.get("/api/desktop/project-items?projectId=99&projectTypeId=1", headers=auth(fresh_db, "pnair"))
        assert other.json() == []
        for endpoint, indexes in [
            ("GET /api/desktop/project-task-data", (0, 1)),
            ("GET /api/desktop/available-tasks", (0, 1)),
            ("GET /api/desktop/item-tracking-tasks", (0,)),
            ("GET /api/desktop/item-status-rule", (0, 1, 2)),
            ("GET /api/desktop/unfinished-tasks", (2,)),
            ("GET /api/desktop/assignments", (0,)),
            ("GET /api/desktop/tracking-data", (1,)),
            ("POST /api/desktop/item-status", (0, 1)),
            ("POST /api/desktop/assignment-accepted", (1,)),
            ("POST /api/desktop/unfinished-finished", (2,)),
            ("POST /api/desktop/activities/start-unallocated", (2,)),
            ("POST /api/desktop/activities/start-task", (2,)),
            ("POST /api/desktop/activities/complete", (4,)),
        ]:
            for index in indexes:
                replay(client, fresh_db, endpoint, index)


def test_project_task_data_defaults_are_updated_then_created_as_recorded(fresh_db: Settings) -> None:
    with api(fresh_db) as client:
        for index in range(4):
            replay(client, fresh_db, "POST /api/desktop/task-data", index)
    rows = query(fresh_db, "SELECT data_def_id, value_int, value_text FROM project_task_data WHERE project_task_id = 3")
    assert rows == [
        {"data_def_id": 1, "value_int": None, "value_text": None},
        {"data_def_id": 5, "value_int": 400, "value_text": None},
        {"data_def_id": 6, "value_int": None, "value_text": "Remove staples first"},
    ]


def test_the_recorded_activity_sequence_gives_the_recorded_answers_and_rows(fresh_db: Settings) -> None:
    with api(fresh_db) as client:
        for endpoint, index in [
            ("POST /api/desktop/activities/start-unallocated", 0),
            ("POST /api/desktop/activities/start-unallocated", 1),  # same uuid: duplicate
            ("POST /api/desktop/activities/complete", 0),  # note on the segment itself
            ("POST /api/desktop/activities/start-task", 0),
            ("POST /api/desktop/activities/start-task", 1),  # same uuid: duplicate
            ("POST /api/desktop/activities/complete", 1),  # paused: prod note + task data
            ("POST /api/desktop/activities/complete", 2),  # already closed: duplicate
            ("POST /api/desktop/activities/complete", 3),  # unknown uuid: ignored
            ("GET /api/desktop/unfinished-tasks", 0),
            ("GET /api/desktop/tracking-data", 0),
            ("POST /api/desktop/unfinished-finished", 0),
            ("POST /api/desktop/unfinished-finished", 1),
            ("GET /api/desktop/unfinished-tasks", 1),
            ("POST /api/desktop/assignment-accepted", 0),
            ("GET /api/desktop/assignments", 1),
        ]:
            replay(client, fresh_db, endpoint, index)
        replay(client, fresh_db, "GET /api/time-tracking", 4)  # the desktop rows as the web sheet shows them
    rows = query(
        fresh_db,
        "SELECT uuid, date, start_time, end_time, duration, is_finished, note FROM users_time_tracking "
        "WHERE uuid IN (%s, %s) ORDER BY id",
        (A1, A2),
    )
    assert [
        (str(r["date"]), str(r["start_time"]), str(r["end_time"]), r["duration"], r["is_finished"], r["note"])
        for r in rows
    ] == [
        ("2026-02-05", "2026-02-05 08:00:00", "2026-02-05 08:10:00", 10, 1, "Morning set-up"),
        ("2026-02-05", "2026-02-05 08:10:00", "2026-02-05 09:00:00", 50, 1, None),
    ]
    notes = query(
        fresh_db, "SELECT project_id, item_id, user_id, task_id, activity_id, note FROM prod_notes WHERE id > 1"
    )
    assert notes == [
        {
            "project_id": 1,
            "item_id": 3,
            "user_id": 3,
            "task_id": 1,
            "activity_id": 2,
            "note": "Paused: staples in folder 7",
        }
    ]


def test_customers_are_refused_by_every_desktop_endpoint(fresh_db: Settings) -> None:
    before = snapshot(fresh_db)
    headers = auth(fresh_db, "customer")
    with api(fresh_db) as client:
        for entry in [e for e in _recorded_desktop_calls() if "login-authcode" not in e["url"]]:
            r = client.request(entry["method"], entry["url"], headers=headers, json=entry["body"])
            assert (r.status_code, r.json()) == (403, {"error": "Forbidden"}), entry["url"]
    assert snapshot(fresh_db) == before


def _recorded_desktop_calls() -> list[dict[str, Any]]:
    from tests.api.work_support import EXAMPLES

    return [c for e in EXAMPLES if e["group"] == "desktop" for c in e["calls"]]


def test_under_api_desktop_authentication_comes_before_routing(fresh_db: Settings) -> None:
    with api(fresh_db) as client:
        r = client.get("/api/desktop/no-such-thing")
        assert (r.status_code, r.json()) == (401, {"error": "Missing bearer token"})
        r = client.delete("/api/desktop/bootstrap")
        assert (r.status_code, r.json()) == (401, {"error": "Missing bearer token"})
        r = client.get("/api/desktop/no-such-thing", headers=auth(fresh_db, "pnair"))
        assert r.status_code == 404
        # the client discovers the /api prefix from a 404 on the bare path (contract-work §1.8)
        r = client.get("/desktop/bootstrap", headers=auth(fresh_db, "pnair"))
        assert r.status_code == 404


def test_an_employee_cannot_act_on_another_users_records(fresh_db: Settings) -> None:
    before = snapshot(fresh_db)
    mreyes = auth(fresh_db, "mreyes")
    pnair_open = "6f1c2a10-0000-4000-8000-0000000000ee"
    with api(fresh_db) as client:
        # pnair's open segment, started by the admin on pnair's behalf
        admin = auth(fresh_db, "admin")
        r = client.post(
            "/api/desktop/activities/start-unallocated",
            headers=admin,
            json={"uuid": pnair_open, "userId": 3, "timestamp": "2026-02-12T08:00:00Z"},
        )
        assert r.json() == {"success": True}
        before = snapshot(fresh_db)
        answers = [
            client.post("/api/desktop/activities/complete", headers=mreyes, json={"uuid": pnair_open, "userId": 3}),
            client.post("/api/desktop/unfinished-finished", headers=mreyes, json={"recordId": 6}),
            client.post("/api/desktop/unfinished-finished", headers=mreyes, json={"uuid": pnair_open}),
            client.post("/api/desktop/assignment-accepted", headers=mreyes, json={"assignmentId": 1}),
        ]
        assert [(a.status_code, a.json()) for a in answers] == [
            (200, {"success": True, "ignored": True}),
            (200, {"success": True}),
            (200, {"success": True}),
            (200, {"success": True}),
        ]
        r = client.get(f"/api/desktop/tracking-data?uuid={'6f1c2a10-0000-4000-8000-000000000006'}", headers=mreyes)
        assert r.json() == []
        # the userId in the body is ignored for non-admins: this lists mreyes's own unfinished task
        r = client.get("/api/desktop/unfinished-tasks?userId=3", headers=mreyes)
        assert [row["id"] for row in r.json()] == [9]
        # a start with someone else's uuid is a conflict, not a silent duplicate (I-23)
        r = client.post(
            "/api/desktop/activities/start-unallocated", headers=mreyes, json={"uuid": pnair_open, "userId": 2}
        )
        assert r.status_code == 409
    assert snapshot(fresh_db) == before


@pytest.mark.parametrize(
    ("start", "end", "duration"),
    [
        ("2026-02-12T06:00:00.000Z", "2026-02-12T06:00:59.999Z", 0),  # floored, as Math.floor did
        ("2026-02-12T06:00:00.000Z", "2026-02-12T06:01:00.001Z", 1),
        ("2026-02-12T06:00:00.900Z", "2026-02-12T06:02:00.100Z", 2),  # start stored as whole seconds
        ("2026-02-12T06:00:00.000Z", "2026-02-12T05:59:30.000Z", 0),  # an end before the start: 0
        ("2026-02-12T06:00:00.000Z", "2026-05-12T06:00:00.000Z", 65535),  # the column's maximum
    ],
)
def test_a_completion_stores_the_floored_minutes_within_the_columns_range(
    fresh_db: Settings, start: str, end: str, duration: int
) -> None:
    headers = auth(fresh_db, "pnair")
    with api(fresh_db) as client:
        client.post(
            "/api/desktop/activities/start-unallocated", headers=headers, json={"uuid": "edge-0001", "timestamp": start}
        )
        r = client.post(
            "/api/desktop/activities/complete",
            headers=headers,
            json={"uuid": "edge-0001", "user_id": 3, "timestamp": end, "isTaskCompleted": 0},
        )
        assert r.json() == {"success": True}
    assert query(fresh_db, "SELECT duration, is_finished FROM users_time_tracking WHERE uuid = 'edge-0001'") == [
        {"duration": duration, "is_finished": 1}  # not a task segment: finished whatever isTaskCompleted says
    ]


def test_another_users_open_segment_is_ignored_and_left_open(fresh_db: Settings) -> None:
    with api(fresh_db) as client:
        client.post(
            "/api/desktop/activities/start-unallocated",
            headers=auth(fresh_db, "pnair"),
            json={"uuid": "mine-0001", "timestamp": "2026-02-12T06:00:00.000Z"},
        )
        other = auth(fresh_db, "mreyes")
        r = client.post(
            "/api/desktop/activities/complete",
            headers=other,
            json={"uuid": "mine-0001", "user_id": 2, "timestamp": "2026-02-12T07:00:00.000Z"},
        )
        unknown = client.post(
            "/api/desktop/activities/complete",
            headers=other,
            json={"uuid": "none-0001", "user_id": 2, "timestamp": "2026-02-12T07:00:00.000Z"},
        )
    assert r.json() == unknown.json() == {"success": True, "ignored": True}
    assert query(fresh_db, "SELECT end_time FROM users_time_tracking WHERE uuid = 'mine-0001'") == [{"end_time": None}]


def test_a_long_segment_keeps_its_full_duration(fresh_db: Settings) -> None:
    headers = auth(fresh_db, "pnair")
    with api(fresh_db) as client:
        client.post(
            "/api/desktop/activities/start-unallocated",
            headers=headers,
            json={"uuid": "long-0001", "timestamp": "2026-02-12T06:00:00.000Z"},
        )
        r = client.post(
            "/api/desktop/activities/complete",
            headers=headers,
            json={"uuid": "long-0001", "user_id": 3, "timestamp": "2026-02-12T15:45:30.500Z"},
        )
        assert r.json() == {"success": True}
    assert query(fresh_db, "SELECT duration, is_finished FROM users_time_tracking WHERE uuid = 'long-0001'") == [
        {"duration": 585, "is_finished": 1}  # 9 h 45 min; the old backend stored 255
    ]


def test_invalid_timestamps_are_400s_that_change_nothing(fresh_db: Settings) -> None:
    headers = auth(fresh_db, "pnair")
    with api(fresh_db) as client:
        client.post("/api/desktop/activities/start-unallocated", headers=headers, json={"uuid": "ts-0001"})
        before = snapshot(fresh_db)
        # the last three: the edge of the calendar, where converting to UTC used to overflow (issue 12 item 8)
        for timestamp in [
            "not a date",
            "2026-02-30T10:00:00Z",
            {"t": 1},
            1e300,
            "12345",
            "9999-12-31T23:30:00-01:00",
            "0001-01-01T00:30:00+01:00",
            8.64e15,
        ]:
            for path, extra in [
                ("/api/desktop/activities/start-unallocated", {"uuid": "ts-0002"}),
                ("/api/desktop/activities/start-task", {"uuid": "ts-0003", "projectId": 1, "taskId": 1}),
                ("/api/desktop/activities/complete", {"uuid": "ts-0001", "userId": 3}),
            ]:
                r = client.post(path, headers=headers, json={**extra, "timestamp": timestamp})
                assert (r.status_code, r.json()) == (400, {"error": "Invalid timestamp"}), (path, timestamp)
        assert snapshot(fresh_db) == before
        # epoch milliseconds are accepted, as `new Date(ms)` did
        r = client.post(
            "/api/desktop/activities/complete",
            headers=headers,
            json={"uuid": "ts-0001", "userId": 3, "timestamp": 1893456000000},
        )
        assert r.json() == {"success": True}
    assert query(fresh_db, "SELECT end_time FROM users_time_tracking WHERE uuid = 'ts-0001'")[0][
        "end_time"
    ].isoformat() == ("2030-01-01T00:00:00")


def test_concurrent_duplicate_completions_close_one_segment_with_one_note(fresh_db: Settings) -> None:
    headers = auth(fresh_db, "pnair")
    uuids = [f"dup-{i:04d}" for i in range(6)]
    answers: list[dict[str, Any]] = []
    lock = threading.Lock()
    with running("ccsm_api", fresh_db) as proc:
        with httpx.Client(base_url=proc.base_url, timeout=20) as http:
            for i, uuid in enumerate(uuids):
                r = http.post(
                    "/api/desktop/activities/start-task",
                    headers=headers,
                    json={
                        "uuid": uuid,
                        "projectId": 1,
                        "taskId": 1,
                        "itemId": 3,
                        "timestamp": f"2026-02-13T0{i}:00:00Z",
                    },
                )
                assert r.json() == {"success": True}
        barrier = threading.Barrier(len(uuids) * 4)

        def complete(uuid: str) -> None:
            body = {
                "uuid": uuid,
                "user_id": 3,
                "is_completed_project_task": True,
                "note": "Box done",
                "taskData": [{"dataDefId": 1, "valueType": "int", "value": 120}],
                "timestamp": "2026-02-13T09:30:00Z",
            }
            with httpx.Client(base_url=proc.base_url, timeout=20) as http:
                barrier.wait(timeout=20)
                r = http.post("/api/desktop/activities/complete", headers=headers, json=body)
            with lock:
                answers.append({"status": r.status_code, **r.json()})

        threads = [threading.Thread(target=complete, args=(u,)) for u in uuids for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
    assert len(answers) == 24
    assert all(a["status"] == 200 and a["success"] is True for a in answers)
    assert sum(1 for a in answers if a == {"status": 200, "success": True}) == len(uuids)
    assert sum(1 for a in answers if a.get("duplicate")) == 3 * len(uuids)
    marks = ", ".join(["%s"] * len(uuids))
    assert query(fresh_db, f"SELECT COUNT(*) AS n FROM prod_notes WHERE note = 'Box done'") == [{"n": len(uuids)}]  # noqa: F541
    closed = query(fresh_db, f"SELECT is_finished FROM users_time_tracking WHERE uuid IN ({marks})", tuple(uuids))  # noqa: S608
    assert [r["is_finished"] for r in closed] == [1] * len(uuids)
    data = query(
        fresh_db,
        f"SELECT COUNT(*) AS n FROM users_time_tracking_data WHERE tracking_uuid IN ({marks})",  # noqa: S608
        tuple(uuids),
    )
    assert data == [{"n": len(uuids)}]


def test_a_desktop_day_runs_end_to_end(fresh_db: Settings) -> None:
    """contract-work §4.18: login, clock-in, start a task from an assignment, pause it, continue it, finish it,
    a break, clock-out."""
    h = auth(fresh_db, "pnair_desktop")
    with api(fresh_db) as client:

        def post(path: str, body: dict[str, Any]) -> Any:
            r = client.post(f"/api/desktop/{path}", headers=h, json=body)
            assert r.status_code == 200, (path, r.text)
            assert r.json()["success"] is True
            return r.json()

        def get(path: str) -> Any:
            r = client.get(f"/api/desktop/{path}", headers=h)
            assert r.status_code == 200, (path, r.text)
            return r.json()

        boot = get("bootstrap")
        assert [u["id"] for u in boot["users"]] == [3]
        assert {p["project_id"] for p in boot["projectUsers"] if p["user_id"] == 3} == {1, 2}
        post(
            "activities/start-unallocated",
            {"uuid": "day-session-1", "user_id": 3, "activity_id": 4, "timestamp": "2026-02-16T08:00:00Z"},
        )
        assert len(get("unfinished-tasks")) == 1
        assignment = get("assignments")[-1]
        assert (assignment["projectId"], assignment["taskId"], assignment["itemId"]) == (1, 5, 4)
        assert get(f"available-tasks?projectId=1") == [  # noqa: F541
            {"id": 4, "description": "Box check-in", "is_default": 0, "roleId": 5},
            {"id": 2, "description": "Document preparation", "is_default": 0, "roleId": 5},
            {"id": 1, "description": "Scanning", "is_default": 0, "roleId": 5},
            {"id": 3, "description": "Rescanning", "is_default": 0, "roleId": 5},
        ]
        assert 5 in get("item-tracking-tasks?projectId=1")
        # START the assigned task
        post(
            "activities/complete",
            {
                "uuid": "day-session-1",
                "user_id": 3,
                "is_completed_project_task": False,
                "timestamp": "2026-02-16T08:05:00Z",
            },
        )
        post(
            "activities/start-task",
            {
                "uuid": "day-task-1",
                "user_id": 3,
                "project_id": 1,
                "task_id": 5,
                "item_id": 4,
                "timestamp": "2026-02-16T08:05:00Z",
            },
        )
        post("assignment-accepted", {"assignmentId": assignment["id"]})
        assert get("item-status-rule?projectId=1&taskId=5&applyAfterFinish=0") is None
        finish_rule = get("item-status-rule?projectId=1&taskId=5&applyAfterFinish=1")
        assert finish_rule == {"statusId": 4, "applyAfterFinish": 1}
        assert [d["dataDefId"] for d in get("project-task-data?projectId=1&taskId=5")] == [3]
        # STOP (pause): the task becomes unfinished, then back to unallocated
        post(
            "activities/complete",
            {
                "uuid": "day-task-1",
                "user_id": 3,
                "is_completed_project_task": False,
                "taskData": [
                    {"data_def_id": 3, "value_type": "bool", "value": "true", "definition_label": "Requires rescan"}
                ],
                "note": "Half done",
                "timestamp": "2026-02-16T10:05:00Z",
            },
        )
        post(
            "activities/start-unallocated",
            {"uuid": "day-session-2", "user_id": 3, "activity_id": 4, "timestamp": "2026-02-16T10:05:00Z"},
        )
        unfinished = get("unfinished-tasks")
        assert [u["uuid"] for u in unfinished] == ["day-task-1", "6f1c2a10-0000-4000-8000-000000000006"]
        # CONTINUE it: a new segment, the old one retired, its inputs prefilled
        post("activities/complete", {"uuid": "day-session-2", "user_id": 3, "timestamp": "2026-02-16T10:15:00Z"})
        post(
            "activities/start-task",
            {
                "uuid": "day-task-2",
                "user_id": 3,
                "project_id": 1,
                "task_id": 5,
                "item_id": 4,
                "timestamp": "2026-02-16T10:15:00Z",
            },
        )
        post("unfinished-finished", {"recordId": unfinished[0]["id"]})
        prefill = get("tracking-data?uuid=day-task-1")
        assert [(d["dataDefId"], d["value_bool"]) for d in prefill] == [(3, 1)]
        # FINISH it (sent twice, as the desktop does), apply the finish rule, then a break and clock-out
        done = {
            "uuid": "day-task-2",
            "user_id": 3,
            "is_completed_project_task": 1,
            "taskData": prefill and [{"dataDefId": 3, "valueType": "bool", "value": 0}],
            "note": "QC ok",
            "timestamp": "2026-02-16T12:00:00Z",
        }
        assert post("activities/complete", done) == {"success": True}
        assert post("activities/complete", done) == {"success": True, "duplicate": True}
        post("item-status", {"itemId": 4, "statusId": finish_rule["statusId"]})
        post(
            "activities/start-unallocated",
            {"uuid": "day-session-3", "user_id": 3, "activity_id": 3, "timestamp": "2026-02-16T12:00:00Z"},
        )
        post(
            "activities/complete",
            {"uuid": "day-session-3", "user_id": 3, "note": "Coffee", "timestamp": "2026-02-16T12:15:00Z"},
        )
        post(
            "activities/start-unallocated",
            {"uuid": "day-session-4", "user_id": 3, "activity_id": 4, "timestamp": "2026-02-16T12:15:00Z"},
        )
        post("activities/complete", {"uuid": "day-session-4", "user_id": 3, "timestamp": "2026-02-16T17:00:00Z"})
        assert [u["uuid"] for u in get("unfinished-tasks")] == ["6f1c2a10-0000-4000-8000-000000000006"]
        assert [a["id"] for a in get("assignments")] == [2]
        sheet = client.get("/api/time-tracking?date=2026-02-16", headers=h).json()
    assert [(r["activity_id"], r["duration"], r["note"]) for r in reversed(sheet)] == [
        (4, 5, None),
        (2, 120, None),
        (4, 10, None),
        (2, 105, None),
        (3, 15, "Coffee"),
        (4, 285, None),
    ]
    assert query(fresh_db, "SELECT status_id FROM items WHERE id = 4") == [{"status_id": 4}]
    assert [n["note"] for n in query(fresh_db, "SELECT note FROM prod_notes WHERE id > 1 ORDER BY id")] == [
        "Half done",
        "QC ok",
    ]
    assert query(
        fresh_db,
        "SELECT tracking_uuid, value_bool FROM users_time_tracking_data WHERE data_def_id = 3 ORDER BY tracking_uuid",
    ) == [{"tracking_uuid": "day-task-1", "value_bool": 1}, {"tracking_uuid": "day-task-2", "value_bool": 0}]


def test_recorded_duplicate_starts_are_still_success(fresh_db: Settings) -> None:
    with api(fresh_db) as client:
        first = send(client, fresh_db, "POST /api/desktop/activities/start-task", 0)
        again = send(client, fresh_db, "POST /api/desktop/activities/start-task", 1)
    assert (first.json(), again.json()) == ({"success": True}, {"success": True, "duplicate": True})


def nested(depth: int) -> Any:
    value: Any = {}
    for _ in range(depth):
        value = [value]
    return value


def test_values_the_database_would_refuse_are_400s_not_500s(fresh_db: Settings) -> None:
    admin = auth(fresh_db, "admin")
    with api(fresh_db) as client:
        client.post("/api/desktop/activities/start-unallocated", headers=admin, json={"uuid": "refuse-1", "userId": 3})
        before = snapshot(fresh_db)
        for path, body in [
            ("activities/start-task", {"uuid": "refuse-2", "userId": 103, "projectId": 1, "taskId": 1}),
            ("activities/start-task", {"uuid": "refuse-3", "userId": 3, "projectId": 2**40, "taskId": 1}),
            ("activities/start-task", {"uuid": "refuse-4", "userId": 3, "projectId": 1, "taskId": 1, "itemId": 2**40}),
            ("activities/start-unallocated", {"uuid": "refuse-5", "userId": 3, "activityId": 99}),
            ("activities/start-unallocated", {"uuid": "x" * 37, "userId": 3}),
            (
                "activities/complete",
                {
                    "uuid": "refuse-1",
                    "userId": 3,
                    "taskData": [{"dataDefId": 2, "valueType": "varchar", "value": "v" * 300}],
                },
            ),
            (
                "activities/complete",
                {"uuid": "refuse-1", "userId": 3, "taskData": [{"dataDefId": 99, "valueType": "int", "value": 1}]},
            ),
            ("task-data", {"projectId": 1, "taskId": 1, "dataDefId": 2, "valueType": "varchar", "value": "v" * 300}),
            ("task-data", {"projectId": 1, "taskId": 1, "dataDefId": 99, "valueType": "int", "value": 1}),
            # deeper than orjson encodes (254 levels): used to be an encoder error, a 500
            ("task-data", {"projectId": 1, "taskId": 1, "dataDefId": 2, "valueType": "json", "value": nested(300)}),
            (
                "activities/complete",
                {"uuid": "refuse-1", "taskData": [{"dataDefId": 2, "valueType": "json", "value": nested(300)}]},
            ),
            # dates MySQL cannot store, at the edge of the calendar too (issue 12 item 8: an OverflowError, 500);
            # a date is the first 10 characters, so only a datetime leaves the calendar by its offset
            *(
                ("task-data", {"projectId": 1, "taskId": 1, "dataDefId": 7, "valueType": kind, "value": value})
                for kind, values in [
                    ("datetime", ("9999-12-31T23:30:00-01:00", "0001-01-01T00:30:00+01:00", "0999-12-31", "soon")),
                    ("date", ("0001-01-01T00:30:00+01:00", "0999-12-31", "soon")),
                ]
                for value in values
            ),
        ]:
            r = client.post(f"/api/desktop/{path}", headers=admin, json=body)
            assert r.status_code == 400, (path, body, r.text)
            assert set(r.json()) == {"error"}
    assert snapshot(fresh_db) == before


def test_completion_task_data_is_capped_and_written_once_per_definition(fresh_db: Settings) -> None:
    headers = auth(fresh_db, "pnair")
    with api(fresh_db) as client:
        for uuid in ("cap-0001", "cap-0002"):
            client.post("/api/desktop/activities/start-unallocated", headers=headers, json={"uuid": uuid})
        # issue 12 item 2: refused before any element is read (it used to be one INSERT per element)
        many = [{"dataDefId": 1, "valueType": "int", "value": i} for i in range(101)]
        complete = "/api/desktop/activities/complete"
        r = client.post(complete, headers=headers, json={"uuid": "cap-0001", "taskData": many})
        assert (r.status_code, r.json()) == (400, {"error": "taskData must have at most 100 entries"})
        assert query(fresh_db, "SELECT end_time FROM users_time_tracking WHERE uuid = 'cap-0001'") == [
            {"end_time": None}
        ]
        # repeated definitions: what writing each in turn left, i.e. the last value of each (definition, column)
        values = [
            {"dataDefId": 1, "valueType": "int", "value": 5},
            {"dataDefId": 2, "valueType": "varchar", "value": "first"},
            {"dataDefId": 1, "valueType": "int", "value": 7},
            {"dataDefId": 2, "valueType": "text", "value": "as text"},
            {"dataDefId": 2, "valueType": "varchar", "value": "last"},
        ]
        r = client.post(complete, headers=headers, json={"uuid": "cap-0002", "taskData": values})
        assert r.json() == {"success": True}
    rows = query(
        fresh_db,
        "SELECT data_def_id, value_int, value_varchar, value_text FROM users_time_tracking_data "
        "WHERE tracking_uuid = 'cap-0002' ORDER BY data_def_id",
    )
    assert rows == [
        {"data_def_id": 1, "value_int": 7, "value_varchar": None, "value_text": None},
        {"data_def_id": 2, "value_int": None, "value_varchar": "last", "value_text": "as text"},
    ]
