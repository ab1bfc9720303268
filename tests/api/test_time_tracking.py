"""`/api/time-tracking` (contract-work §3): the recorded responses in the probe's order, the 400s that used to
crash or 500 (I-1, I-28), atomic overlap protection for manual entries (I-19), and auth-off scoping (I-2)."""

from __future__ import annotations

import re
import threading

import httpx

from ccsm_core.settings import Settings
from tests.api.work_support import api, auth, call, query, replay, send, snapshot
from tests.harness import running

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def test_the_production_sheet_matches_the_recorded_seed_responses(fresh_db: Settings) -> None:
    with api(fresh_db) as client:
        replay(client, fresh_db, "GET /api/time-tracking", 0)
        replay(client, fresh_db, "GET /api/time-tracking", 1)  # an employee's userId is ignored
        replay(client, fresh_db, "GET /api/time-tracking", 2)
        replay(client, fresh_db, "GET /api/time-tracking/metrics", 1)
        replay(client, fresh_db, "GET /api/time-tracking/metrics", 2)


def test_manual_entries_edits_notes_and_deletes_follow_the_recording(fresh_db: Settings) -> None:
    with api(fresh_db) as client:
        created = send(client, fresh_db, "POST /api/time-tracking", 0)
        assert created.status_code == 201
        assert created.json()["id"] == 11
        assert UUID_RE.match(created.json()["uuid"])
        replay(client, fresh_db, "POST /api/time-tracking", 1)  # overlaps the 14:00-14:30 meeting
        replay(client, fresh_db, "POST /api/time-tracking", 2)  # end before start
        own = send(client, fresh_db, "POST /api/time-tracking", 3)
        assert (own.status_code, own.json()["id"]) == (201, 12)
        assert query(fresh_db, "SELECT user_id, duration, note FROM users_time_tracking WHERE id = 12") == [
            {"user_id": 3, "duration": 510, "note": "Drive to Frederick"}
        ]
        # The recording used ids 15 and 16 (its database had desktop rows 11-14 by then).
        for endpoint, index, url in [
            ("PUT /api/time-tracking/:id", 0, "/api/time-tracking/11"),
            ("PUT /api/time-tracking/:id", 1, "/api/time-tracking/11"),
            ("PUT /api/time-tracking/:id", 2, "/api/time-tracking/11"),
            ("PUT /api/time-tracking/:id", 3, "/api/time-tracking/12"),
            ("PUT /api/time-tracking/:id", 4, None),
            ("PUT /api/time-tracking/:id", 5, "/api/time-tracking/11"),
            ("PUT /api/time-tracking/:id/note", 0, "/api/time-tracking/11/note"),
            ("PUT /api/time-tracking/:id/note", 1, "/api/time-tracking/11/note"),
            ("PUT /api/time-tracking/:id/note", 2, None),
        ]:
            rec = call(endpoint, index)
            r = client.request(rec["method"], url or rec["url"], headers=auth(fresh_db, rec["who"]), json=rec["body"])
            assert (r.status_code, r.json()) == (rec["status"], rec["response"]), rec["note"]
        rows = query(
            fresh_db, "SELECT id, start_time, end_time, duration, note FROM users_time_tracking WHERE id IN (11, 12)"
        )
        assert [(r["id"], str(r["start_time"]), str(r["end_time"]), r["duration"], r["note"]) for r in rows] == [
            (11, "2026-02-02 15:00:00", "2026-02-02 16:30:00", 90, "Safety training - forklift module"),
            (12, "2026-02-06 07:30:00", "None", None, "Drive to Frederick"),
        ]
        for index, url in [(0, "/api/time-tracking/11"), (1, "/api/time-tracking/11"), (2, "/api/time-tracking/11")]:
            rec = call("DELETE /api/time-tracking/:id", index)
            r = client.delete(url, headers=auth(fresh_db, rec["who"]))
            assert (r.status_code, r.json()) == (rec["status"], rec["response"]), rec["note"]


def test_bulk_delete_is_all_or_nothing_for_someone_elses_rows(fresh_db: Settings) -> None:
    with api(fresh_db) as client:
        rec = call("POST /api/time-tracking/bulk-delete", 0)
        r = client.post(rec["url"], headers=auth(fresh_db, "mreyes"), json={"ids": [2, 6, 8]})
        assert (r.status_code, r.json()) == (403, {"error": "Forbidden"})
        assert query(fresh_db, "SELECT COUNT(*) AS n FROM users_time_tracking WHERE id IN (2, 6, 8)") == [{"n": 3}]
        r = client.post(rec["url"], headers=auth(fresh_db, "pnair"), json={"ids": [2, "6", 6, 999]})
        assert (r.status_code, r.json()) == (200, {"success": True, "deleted": 2})
        assert query(fresh_db, "SELECT COUNT(*) AS n FROM users_time_tracking_data WHERE tracking_uuid LIKE %s", (
            "6f1c2a10-0000-4000-8000-00000000000_",
        )) == [{"n": 2}]  # fmt: skip
        replay(client, fresh_db, "POST /api/time-tracking/bulk-delete", 2)


def test_inputs_that_used_to_crash_or_reach_sql_are_400s_that_change_nothing(fresh_db: Settings) -> None:
    before = snapshot(fresh_db)
    admin = auth(fresh_db, "admin")
    base = {"userId": 3, "date": "2026-02-09", "activityId": 6, "startTime": "09:00", "endTime": "10:00"}
    with api(fresh_db) as client:
        for change in [
            {"startTime": 930},  # I-1: `.split` on a number killed the process
            {"endTime": ["10:00"]},
            {"startTime": "09:00:30"},  # a third part ended up in the SQL literal: 500
            {"date": "2026-02-31"},
            {"date": "yesterday"},
            {"activityId": -4},
            {"itemId": "abc"},
            {"note": {"a": 1}},
        ]:
            r = client.post("/api/time-tracking", headers=admin, json={**base, **change})
            assert r.status_code == 400, change
            assert set(r.json()) == {"error"}
        for url in [
            "/api/time-tracking?userId=3&date=2026-02-02&date=2026-02-03",
            "/api/time-tracking?userId[a]=3&date=2026-02-02",
            "/api/time-tracking?date=not-a-date",
            "/api/time-tracking/metrics?dateFrom=2026-02-01&dateTo=2026-13-01",
        ]:
            r = client.get(url, headers=admin)
            assert r.status_code == 400, url
        r = client.put("/api/time-tracking/abc", headers=admin, json={})
        assert (r.status_code, r.json()) == (400, {"error": "Invalid entry id"})
        r = client.put("/api/time-tracking/2/note", headers=admin, json={"note": ["x"]})
        assert r.status_code == 400
        r = client.put(
            "/api/time-tracking/2",
            headers=admin,
            json={"startDate": "2026-02-02", "startTime": "8:15", "endDate": "2026-02-02", "endTime": "  "},
        )
        assert (r.status_code, r.json()) == (400, {"error": "endTime must be HH:MM or empty"})
    assert snapshot(fresh_db) == before


def test_an_entry_overlapping_a_segment_filed_under_the_previous_day_is_refused(fresh_db: Settings) -> None:
    admin = auth(fresh_db, "admin")
    with api(fresh_db) as client:
        night = {"userId": 3, "date": "2026-02-09", "activityId": 10, "startTime": "22:00", "endTime": "23:30"}
        assert client.post("/api/time-tracking", headers=admin, json=night).status_code == 201
        # a desktop segment filed under 2026-02-09 that ran past midnight
        start = client.post(
            "/api/desktop/activities/start-unallocated",
            headers=admin,
            json={"uuid": "late-0001", "userId": 3, "timestamp": "2026-02-09T23:40:00Z"},
        )
        assert start.json() == {"success": True}
        done = client.post(
            "/api/desktop/activities/complete",
            headers=admin,
            json={"uuid": "late-0001", "userId": 3, "timestamp": "2026-02-10T01:00:00Z"},
        )
        assert done.json() == {"success": True}
        morning = {"userId": 3, "date": "2026-02-10", "activityId": 10, "startTime": "0:30", "endTime": "2:00"}
        r = client.post("/api/time-tracking", headers=admin, json=morning)
        assert (r.status_code, r.json()) == (409, {"error": "Time range overlaps an existing entry."})


def test_concurrent_overlapping_manual_entries_store_exactly_one(fresh_db: Settings) -> None:
    headers = auth(fresh_db, "admin")
    statuses: list[int] = []
    lock = threading.Lock()
    with running("ccsm_api", fresh_db) as proc:
        barrier = threading.Barrier(8)

        def post(i: int) -> None:
            body = {"userId": 2, "date": "2026-02-11", "activityId": 6, "startTime": f"09:{i:02d}", "endTime": "11:00"}
            with httpx.Client(base_url=proc.base_url, timeout=20) as http:
                barrier.wait(timeout=20)
                r = http.post("/api/time-tracking", headers=headers, json=body)
            with lock:
                statuses.append(r.status_code)

        threads = [threading.Thread(target=post, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
    assert sorted(statuses) == [201] + [409] * 7
    assert query(fresh_db, "SELECT COUNT(*) AS n FROM users_time_tracking WHERE date = '2026-02-11'") == [{"n": 1}]


def test_with_auth_off_user_scoped_endpoints_use_the_requested_user(fresh_db: Settings) -> None:
    with api(fresh_db, auth_required=False) as client:
        r = client.get("/api/time-tracking?userId=2&date=2026-02-03")
        assert r.status_code == 200
        assert [row["id"] for row in r.json()] == [10, 9, 8]
        r = client.put("/api/time-tracking/10/note", json={"note": "ok"})
        assert (r.status_code, r.json()) == (200, {"success": True})
        r = client.get("/api/time-tracking?date=2026-02-03")
        assert (r.status_code, r.json()) == (400, {"error": "userId and either date or dateFrom/dateTo are required"})


def test_customers_cannot_use_time_tracking(fresh_db: Settings) -> None:
    with api(fresh_db) as client:
        r = client.get("/api/time-tracking?date=2026-02-02", headers=auth(fresh_db, "customer"))
        assert (r.status_code, r.json()) == (403, {"error": "Forbidden"})


def test_an_empty_date_falls_back_to_the_range_instead_of_matching_nothing(fresh_db: Settings) -> None:
    with api(fresh_db) as client:
        r = client.get(
            "/api/time-tracking?userId=3&date=&dateFrom=2026-02-01&dateTo=2026-02-07", headers=auth(fresh_db, "admin")
        )
    assert r.status_code == 200
    assert [row["id"] for row in r.json()] == [7, 6, 5, 4, 3, 2, 1]


def test_values_the_database_would_refuse_are_400s_not_500s(fresh_db: Settings) -> None:
    before = snapshot(fresh_db)
    admin = auth(fresh_db, "admin")
    base = {"userId": 3, "date": "2026-02-09", "activityId": 6, "startTime": "09:00", "endTime": "10:00"}
    with api(fresh_db) as client:
        for change in [{"userId": 103}, {"activityId": 99}, {"note": "n" * 70_000}]:
            r = client.post("/api/time-tracking", headers=admin, json={**base, **change})
            assert r.status_code == 400, change
        r = client.put("/api/time-tracking/2/note", headers=admin, json={"note": "n" * 70_000})
        assert r.status_code == 400
    assert snapshot(fresh_db) == before


def test_bulk_delete_caps_the_list_before_reading_it(fresh_db: Settings) -> None:
    # Issue 12 item 2: the cap used to count distinct valid ids after a quadratic pass over the whole list.
    before = snapshot(fresh_db)
    with api(fresh_db) as client:
        r = client.post("/api/time-tracking/bulk-delete", headers=auth(fresh_db, "admin"), json={"ids": [2] * 10_001})
        assert (r.status_code, r.json()) == (400, {"error": "Too many ids"})
        assert snapshot(fresh_db) == before
        ids = [2, *range(1_000_000, 1_009_999)]  # 10,000 entries: the most one request may name
        r = client.post("/api/time-tracking/bulk-delete", headers=auth(fresh_db, "admin"), json={"ids": ids})
        assert (r.status_code, r.json()) == (200, {"success": True, "deleted": 1})
