"""`POST /api/items/jira-sync`: contract-core §7 I3 and fix 12 (paging, exact match, time-outs, bounded retry,
no connection held during HTTP calls, idempotence), against a fake Jira over real HTTP on loopback."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from ccsm_api.jira import JiraPolicy, parse_created, retry_after_seconds, split_name
from ccsm_core.settings import Settings
from tests.api.fake_jira import ISSUE_SEARCH, PROJECT_SEARCH, FakeJira, issue, serving
from tests.api.part1_support import api, auth, call, fast, query, replay, token
from tests.harness import running

REFERENCE = call("POST /api/items/jira-sync", 1)
CCSM = {"id": "10000", "key": "CCSM", "name": "CCSM Platform"}
ARCHIVE = {"id": "10001", "key": "CCSMA", "name": "CCSM Platform Archive"}
REFERENCE_ISSUES = [
    issue("CCSM-12", "In Progress", "Marco Reyes", "2026-01-12T11:00:00.000+0000"),
    issue("CCSM-20", "Code Review", "Priya Nair", "2026-02-01T09:30:00.000+0000"),
    issue("CCSM-21", "To Do", None, "2026-02-02T13:00:00.000+0000"),
]
QUICK = JiraPolicy(timeout_s=0.5, attempts=3, backoff_s=0.05, max_retry_after_s=5.0)


def jira_settings(settings: Settings, base_url: str) -> Settings:
    return fast(settings, jira_base_url=base_url + "/", jira_email="bot@ccsm.test", jira_api_token="t0ken")


@contextmanager
def syncing(settings: Settings, fake: FakeJira, policy: JiraPolicy = QUICK) -> Iterator[TestClient]:
    with serving(fake), api(jira_settings(settings, fake.base_url)) as client:
        client.app.state.jira_policy = policy  # type: ignore[attr-defined]
        yield client


def sync(client: TestClient, settings: Settings, body: dict[str, Any] | None = None, who: str = "admin") -> Any:
    return client.post(
        "/api/items/jira-sync", headers=auth(settings, who), json={"projectId": 3} if body is None else body
    )


def snapshot(settings: Settings) -> dict[str, list[dict[str, Any]]]:
    return {
        "items": query(settings, "SELECT * FROM items WHERE project_id = 3 ORDER BY id"),
        "statuses": query(settings, "SELECT * FROM ref_item_status WHERE project_id = 3 ORDER BY id"),
        "assignments": query(settings, "SELECT * FROM assigments WHERE project_id = 3 ORDER BY id"),
    }


def test_sync_answers_like_the_reference_and_writes_the_same_rows(fresh_db: Settings) -> None:
    fake = FakeJira(projects=[ARCHIVE, CCSM], issues=list(REFERENCE_ISSUES), project_page_size=1, issue_page_size=2)
    with syncing(fresh_db, fake) as client:
        r = sync(client, fresh_db, REFERENCE["body"] | {"userId": 2})
        listed = client.get("/api/items?projectId=3", headers=auth(fresh_db, "admin")).json()
    assert (r.status_code, r.json()) == (REFERENCE["status"], REFERENCE["response"])
    expected = call("GET /api/items", 3)["response"]
    fields = ("code", "label", "projectId", "categoryId", "createdAt", "statusLabel")
    assert [{k: row[k] for k in fields} for row in listed] == [{k: row[k] for k in fields} for row in expected]
    # CCSM-12 did not change in Jira, so it is not rewritten (the old backend bumped updated_at on every sync).
    assert listed[0]["updatedAt"] == "2026-02-03T10:00:00.000Z"
    new_items = query(fresh_db, "SELECT code, item_type_id, created_by_user_id FROM items WHERE id > 8 ORDER BY id")
    assert new_items == [
        {"code": "CCSM-20", "item_type_id": 4, "created_by_user_id": 1},  # from the token, not the body's userId 2
        {"code": "CCSM-21", "item_type_id": 4, "created_by_user_id": 1},
    ]
    assignments = query(
        fresh_db, "SELECT user_id, item_id, task_id, role_id, is_accepted FROM assigments WHERE project_id = 3"
    )
    assert assignments == [
        {"user_id": 2, "item_id": 8, "task_id": 27, "role_id": None, "is_accepted": 0},
        {"user_id": 2, "item_id": 7, "task_id": 27, "role_id": None, "is_accepted": 1},
        {"user_id": 3, "item_id": 9, "task_id": 27, "role_id": None, "is_accepted": 0},
    ]
    search = fake.calls(ISSUE_SEARCH)
    assert len(search) == 2
    assert search[0].params["jql"] == 'project="CCSM"'
    assert search[0].params["fields"] == "key,assignee,status,created"
    assert "nextPageToken" not in search[0].params
    assert search[1].params["nextPageToken"] == "page-2"
    expected_auth = "Basic " + base64.b64encode(b"bot@ccsm.test:t0ken").decode()
    assert {r.headers["authorization"] for r in fake.requests} == {expected_auth}
    assert {r.headers["accept"] for r in fake.requests} == {"application/json"}


def test_a_second_sync_writes_nothing_and_emits_no_db_changed(fresh_db: Settings) -> None:
    fake = FakeJira(projects=[CCSM], issues=list(REFERENCE_ISSUES))
    with syncing(fresh_db, fake) as client:
        commits: list[str] = []
        client.app_state["db"].on_commit(commits.append)
        first = sync(client, fresh_db)
        after_first = snapshot(fresh_db)
        second = sync(client, fresh_db)
    assert commits == ["transaction-commit"]
    assert second.json() == first.json()
    assert snapshot(fresh_db) == after_first


def test_a_changed_status_rewrites_only_that_item(fresh_db: Settings) -> None:
    fake = FakeJira(projects=[CCSM], issues=[issue("CCSM-12", "Done", "Marco Reyes", None)])
    with syncing(fresh_db, fake) as client:
        r = sync(client, fresh_db)
    assert r.json() == {
        "projectKey": "CCSM",
        "count": 1,
        "issues": [{"key": "CCSM-12", "status": "Done", "assignee": "Marco Reyes"}],
    }
    rows = query(fresh_db, "SELECT code, status_id, updated_at FROM items WHERE project_id = 3 ORDER BY id")
    assert rows[0]["status_id"] == 9
    assert rows[0]["updated_at"] is not None
    assert str(rows[0]["updated_at"]) != "2026-02-03 10:00:00"
    assert rows[1] == {"code": "CCSM-15", "status_id": 7, "updated_at": None}


def test_every_page_of_a_large_project_is_synced(fresh_db: Settings) -> None:
    many = [issue(f"CCSM-{n}", "To Do", None, "2026-03-01T08:00:00.000Z") for n in range(1000, 1250)]
    fake = FakeJira(projects=[CCSM], issues=many)
    with syncing(fresh_db, fake) as client:
        r = sync(client, fresh_db)
    assert r.status_code == 200
    assert r.json()["count"] == 250
    assert [c.params.get("nextPageToken") for c in fake.calls(ISSUE_SEARCH)] == [None, "page-100", "page-200"]
    assert query(fresh_db, "SELECT COUNT(*) AS n FROM items WHERE project_id = 3")[0]["n"] == 252


def test_a_rate_limited_call_is_retried_after_its_retry_after(fresh_db: Settings) -> None:
    fake = FakeJira(projects=[CCSM], issues=list(REFERENCE_ISSUES), plan={ISSUE_SEARCH: ["429:1"]})
    with syncing(fresh_db, fake) as client:
        r = sync(client, fresh_db)
    assert (r.status_code, r.json()) == (200, REFERENCE["response"])
    first, second = fake.calls(ISSUE_SEARCH)
    assert second.at - first.at >= 1.0


def test_a_retry_after_beyond_the_limit_fails_at_once_with_502(fresh_db: Settings) -> None:
    fake = FakeJira(projects=[CCSM], issues=list(REFERENCE_ISSUES), plan={ISSUE_SEARCH: ["429:3600"]})
    with syncing(fresh_db, fake) as client:
        r = sync(client, fresh_db)
    assert (r.status_code, r.json()) == (502, {"error": "Jira is unavailable"})
    assert len(fake.calls(ISSUE_SEARCH)) == 1


def test_a_call_that_times_out_is_retried(fresh_db: Settings) -> None:
    fake = FakeJira(projects=[CCSM], issues=list(REFERENCE_ISSUES), plan={PROJECT_SEARCH: ["hold"]})
    with syncing(fresh_db, fake, dataclasses.replace(QUICK, timeout_s=0.3)) as client:
        r = sync(client, fresh_db)
    assert (r.status_code, r.json()) == (200, REFERENCE["response"])
    assert len(fake.calls(PROJECT_SEARCH)) == 2


def test_jira_that_keeps_failing_gives_502_after_a_bounded_number_of_attempts(fresh_db: Settings) -> None:
    before = snapshot(fresh_db)
    fake = FakeJira(projects=[CCSM], issues=list(REFERENCE_ISSUES), plan={ISSUE_SEARCH: ["503"] * 10})
    with syncing(fresh_db, fake) as client:
        r = sync(client, fresh_db)
    assert (r.status_code, r.json()) == (502, {"error": "Jira is unavailable"})
    assert len(fake.calls(ISSUE_SEARCH)) == QUICK.attempts
    assert snapshot(fresh_db) == before


def test_jira_refusing_the_credentials_gives_502_without_retrying(fresh_db: Settings) -> None:
    fake = FakeJira(projects=[CCSM], issues=[], plan={PROJECT_SEARCH: ["401"]})
    with syncing(fresh_db, fake) as client:
        r = sync(client, fresh_db)
    assert (r.status_code, r.json()) == (502, {"error": "Jira is unavailable"})
    assert len(fake.requests) == 1


def test_unreachable_jira_gives_502(fresh_db: Settings) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    with api(jira_settings(fresh_db, closed)) as client:
        client.app.state.jira_policy = QUICK  # type: ignore[attr-defined]
        r = sync(client, fresh_db)
    assert (r.status_code, r.json()) == (502, {"error": "Jira is unavailable"})


def test_only_an_exactly_named_jira_project_is_synced(fresh_db: Settings) -> None:
    fake = FakeJira(projects=[{"id": "1", "key": "CCSMV2", "name": "CCSM Platform v2"}], issues=[])
    with syncing(fresh_db, fake) as client:
        r = sync(client, fresh_db)
    assert (r.status_code, r.json()) == (404, {"error": "Matching Jira project not found"})
    assert fake.calls(ISSUE_SEARCH) == []


def test_missing_jira_settings_give_the_old_500(fresh_db: Settings) -> None:
    with api(fresh_db) as client:
        replay(client, fresh_db, "POST /api/items/jira-sync", 0)


def test_project_checks_answer_like_the_reference(fresh_db: Settings) -> None:
    fake = FakeJira(projects=[CCSM], issues=list(REFERENCE_ISSUES))
    with syncing(fresh_db, fake) as client:
        replay(client, fresh_db, "POST /api/items/jira-sync", 2)
        unknown = sync(client, fresh_db, {"projectId": 999})
        missing = sync(client, fresh_db, {})
        bad = sync(client, fresh_db, {"projectId": "abc"})
        from_query = client.post("/api/items/jira-sync?projectId=3", headers=auth(fresh_db, "mreyes"), json={})
    assert (unknown.status_code, unknown.json()) == (404, {"error": "Project not found"})
    assert (missing.status_code, missing.json()) == (400, {"error": "projectId is required"})
    assert (bad.status_code, bad.json()) == (400, {"error": "projectId is required"})
    assert (from_query.status_code, from_query.json()) == (200, REFERENCE["response"])
    assert fake.calls(PROJECT_SEARCH)[0].params["query"] == "CCSM Platform"


def test_no_database_connection_is_held_while_jira_is_answering(fresh_db: Settings) -> None:
    """With a pool of one connection, other requests are served while the sync waits on Jira."""
    fake = FakeJira(projects=[CCSM], issues=list(REFERENCE_ISSUES), plan={ISSUE_SEARCH: ["hold"]})
    headers = {"Authorization": f"Bearer {token(fresh_db, 'admin')}"}

    async def scenario(base_url: str) -> tuple[int, int, Any]:
        async with httpx.AsyncClient(base_url=base_url, timeout=20) as client:
            pending = asyncio.create_task(client.post("/api/items/jira-sync", headers=headers, json={"projectId": 3}))
            assert await asyncio.to_thread(fake.holding.wait, 10)
            other = await client.get("/api/customers", headers=headers, timeout=5)
            fake.release.set()
            synced = await pending
            return other.status_code, synced.status_code, synced.json()

    with serving(fake):
        settings = dataclasses.replace(jira_settings(fresh_db, fake.base_url), db_pool_size=1)
        with running("ccsm_api", settings) as server:
            other_status, sync_status, body = asyncio.run(scenario(server.base_url))
    assert other_status == 200
    assert (sync_status, body) == (200, REFERENCE["response"])


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("2", 2.0), ("0", 0.0), (" 1.5 ", 1.5), ("soon", None), (None, None), ("Thu, 01 Jan 1970 00:00:00 GMT", 0.0)],
)
def test_retry_after_is_read_as_seconds_or_an_http_date(value: str | None, seconds: float | None) -> None:
    assert retry_after_seconds(value) == seconds


def test_jira_timestamps_and_names_are_parsed_like_the_old_backend() -> None:
    assert str(parse_created("2026-01-12T13:00:00.000+0200")) == "2026-01-12 11:00:00"
    assert parse_created("not a date") is None
    assert parse_created("9999-12-31T23:30:00.000-0100") is None  # year 10000 in UTC: used to raise OverflowError
    assert split_name("Anna Maria de Souza") == ("Anna", "Maria de Souza")
    assert split_name("Cher") is None
