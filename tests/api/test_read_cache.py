"""Reads served from the response cache (`ccsm_core.response_cache`), through the api: never stale after a commit
(in this process or another one), never another caller's answer, 304 on an unchanged ETag, and off with a setting."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
from starlette.testclient import TestClient

from ccsm_core.settings import Settings
from ccsm_core.tokens import DESKTOP_SCOPE, TokenService
from tests.api.work_support import api, execute
from tests.api.work_support import auth as seed_auth
from tests.harness import running

CUSTOMER = {
    "name": "Frederick County",
    "state": "MD",
    "county": "Frederick",
    "contact_name": "Samuel Ortiz",
    "contact_email": "sortiz@frederick.test",
    "contact_phone": "301-555-0178",
}

# Every read the clients use, with the callers whose answers differ (other users, other roles, a desktop token),
# each path read by every caller in turn: a key that left out what a handler decides on would hand one caller's
# answer (or a 200 where it is 403) to the next.
CALLERS = ("pnair", "mreyes", "admin", "pnair_desktop", "admin_desktop", "customer", "tbecker")


def auth(settings: Settings, who: str) -> dict[str, str]:
    """The seed users' web tokens, and desktop-scoped ones (what the auth-code login issues) for `*_desktop`."""
    if who in ("pnair_desktop", "admin_desktop"):
        user_id, role, login = {"pnair_desktop": (3, 2, "pnair"), "admin_desktop": (1, 1, "admin")}[who]
        tokens = TokenService(settings.jwt_secret, expires_seconds=3600)
        return {"Authorization": f"Bearer {tokens.issue(user_id, role, login, scope=DESKTOP_SCOPE)}"}
    return seed_auth(settings, who)


PATHS = (
    "/api/users",
    "/api/users/roles",
    "/api/customers",
    "/api/lookups/project-form",
    "/api/lookups/task-data-definitions",
    "/api/lookups/task-categories",
    "/api/lookups/item-categories?projectTypeCode=CFS",
    "/api/projects",
    "/api/projects/1",
    "/api/items/status-summary?projectId=1",
    "/api/items?projectId=1",
    "/api/time-tracking?userId=3&date=2026-02-02",
    "/api/time-tracking?userId=2&date=2026-02-02",
    "/api/time-tracking/metrics?userId=3&dateFrom=2026-02-01&dateTo=2026-02-07",
    "/api/desktop/project-task-data?projectId=1&taskId=1",
    "/api/desktop/available-tasks?projectId=1",
    "/api/desktop/available-tasks?userId=2&projectId=1",
    "/api/desktop/project-items?projectId=1&projectTypeId=1",
    "/api/desktop/item-tracking-tasks?projectId=1",
    "/api/desktop/item-status-rule?projectId=1&taskId=1&applyAfterFinish=0",
    "/api/desktop/unfinished-tasks",
    "/api/desktop/unfinished-tasks?userId=3",
    "/api/desktop/assignments",
    "/api/desktop/tracking-data?uuid=9b0e7d3c-0000-4000-8000-0000000000a2",
)


def _answers(settings: Settings, rounds: int, **overrides: Any) -> list[tuple[str, str, int, bytes]]:
    out = []
    with api(settings, **overrides) as client:
        for _ in range(rounds):
            for path in PATHS:
                for who in CALLERS:
                    r = client.get(path, headers=auth(settings, who))
                    out.append((path, who, r.status_code, r.content))
    return out


def test_every_read_answers_each_caller_what_the_uncached_service_answers(settings: Settings) -> None:
    uncached = _answers(settings, 1, response_cache=False)
    cached = _answers(settings, 2)  # the second round is served from the cache
    assert cached == uncached * 2
    assert {status for _, _, status, _ in uncached} >= {200, 401, 403}  # the callers really differ


def test_new_items_show_up_at_once_after_the_post(fresh_db: Settings) -> None:
    headers = auth(fresh_db, "admin")
    with api(fresh_db) as client:
        before = client.get("/api/items?projectId=1", headers=headers).json()
        assert client.post("/api/items", json={"projectId": 1, "count": 2}, headers=headers).status_code == 201
        after = client.get("/api/items?projectId=1", headers=headers).json()
    assert len(after) == len(before) + 2


def test_a_write_through_one_process_is_seen_by_the_next_read_from_another(fresh_db: Settings) -> None:
    admin = auth(fresh_db, "admin")
    with running("ccsm_api", fresh_db) as a, running("ccsm_api", fresh_db) as b, httpx.Client(timeout=10) as http:
        for round_ in range(3):
            before = http.get(f"{b.base_url}/api/items?projectId=2", headers=admin).json()  # warms B's cache
            customers = http.get(f"{b.base_url}/api/customers", headers=admin)
            assert customers.status_code == 200
            created = http.post(f"{a.base_url}/api/items", json={"projectId": 2, "count": 1}, headers=admin)
            assert created.status_code == 201, round_
            after = http.get(f"{b.base_url}/api/items?projectId=2", headers=admin).json()
            assert len(after) == len(before) + 1, round_
            name = f"Frederick County {round_}"
            assert http.put(f"{a.base_url}/api/customers/2", json={**CUSTOMER, "name": name}, headers=admin).is_success
            names = [c["name"] for c in http.get(f"{b.base_url}/api/customers", headers=admin).json()]
            assert name in names, round_


def revalidated_until_a_write(
    client: TestClient, path: str, headers: dict[str, str], write: Callable[[], httpx.Response]
) -> httpx.Response:
    """`path` answers 304 to its own ETag (also weak, also in a list) until `write()` commits; the answer after it."""
    etag = client.get(path, headers=headers).headers["etag"]
    again = client.get(path, headers={**headers, "If-None-Match": etag})
    assert (again.status_code, again.content, again.headers["etag"]) == (304, b"", etag)
    assert client.get(path, headers={**headers, "If-None-Match": f'"x", W/{etag}'}).status_code == 304
    assert write().status_code == 200
    after = client.get(path, headers={**headers, "If-None-Match": etag})
    assert after.status_code == 200
    assert after.headers["etag"] != etag
    return after


def test_a_cached_answer_is_revalidated_with_its_etag_until_a_write(fresh_db: Settings) -> None:
    headers = auth(fresh_db, "mreyes")
    with api(fresh_db) as client:
        after = revalidated_until_a_write(
            client, "/api/customers", headers, lambda: client.put("/api/customers/2", json=CUSTOMER, headers=headers)
        )
    assert "Frederick County" in [c["name"] for c in after.json()]


def test_a_deactivated_user_gets_nothing_from_the_cache(fresh_db: Settings) -> None:
    employee = auth(fresh_db, "mreyes")
    with api(fresh_db) as client:
        assert client.get("/api/customers", headers=employee).status_code == 200
        execute(fresh_db, "UPDATE users SET is_active = 0 WHERE id = 2")
        client.app_state["guard"].users.forget(2)  # what the deactivating PUT's revocation does in every process
        assert client.get("/api/customers", headers=employee).status_code == 401


def test_with_the_cache_off_a_change_made_behind_the_service_shows_at_once(fresh_db: Settings) -> None:
    """What the setting is for: a row changed outside the service (no data version bump) is served from memory
    with the cache on, and read from the database on every request with `RESPONSE_CACHE=false`."""
    headers = auth(fresh_db, "mreyes")
    seen = {}
    for enabled in (True, False):
        execute(fresh_db, "UPDATE customers SET name = 'Before' WHERE id = 1")
        with api(fresh_db, response_cache=enabled) as client:
            client.get("/api/customers", headers=headers)
            execute(fresh_db, "UPDATE customers SET name = 'Behind' WHERE id = 1")
            seen[enabled] = client.get("/api/customers", headers=headers).json()[0]["name"]
    assert seen == {True: "Before", False: "Behind"}
