"""`/api/items` status summary, list and create (admin and employee): contract-core §7 I1, I2, I4, and the fixes
for core bugs 8, 12 and 15."""

from __future__ import annotations

import asyncio
import dataclasses

import httpx
import pytest

from ccsm_core.settings import Settings
from tests.api.part1_support import api, auth, call, expired_auth, fast, open_transactions, query, replay, token
from tests.harness import running

TIMESTAMPS = ("createdAt", "updatedAt")


def without_timestamps(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    return [{k: v for k, v in row.items() if k not in TIMESTAMPS} for row in rows]


def test_status_summary_and_item_lists_match_the_reference(fresh_db: Settings) -> None:
    with api(fresh_db) as client:
        replay(client, fresh_db, "GET /api/items/status-summary", 0)
        replay(client, fresh_db, "GET /api/items/status-summary", 1)
        replay(client, fresh_db, "GET /api/items", 0)
        replay(client, fresh_db, "GET /api/items", 1)


def test_an_unknown_project_has_only_the_registered_row(settings: Settings) -> None:
    with api(settings) as client:
        r = client.get("/api/items/status-summary?projectId=999", headers=auth(settings, "admin"))
    assert r.json() == [{"id": None, "label": "Registered", "count": 0}]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/items?projectId=1"),
        ("GET", "/api/items/status-summary?projectId=1"),
        ("POST", "/api/items"),
        ("POST", "/api/items/jira-sync"),
    ],
)
def test_items_are_for_admins_and_employees_only(settings: Settings, method: str, path: str) -> None:
    with api(settings) as client:
        customer = client.request(method, path, headers=auth(settings, "customer"), json={"projectId": 1})
        anonymous = client.request(method, path, json={"projectId": 1})
        expired = client.request(method, path, headers=expired_auth(settings, "admin"), json={"projectId": 1})
    assert (customer.status_code, customer.json()) == (403, {"error": "Forbidden"})
    assert (anonymous.status_code, anonymous.json()) == (401, {"error": "Missing bearer token"})
    assert (expired.status_code, expired.json()) == (401, {"error": "Invalid or expired token"})


@pytest.mark.parametrize(
    "query_string",
    ["", "?projectId=", "?projectId=0", "?projectId=abc", "?projectId=Infinity", "?projectId=-Infinity"],
)
def test_a_missing_or_unusable_project_id_is_400(settings: Settings, query_string: str) -> None:
    with api(settings) as client:
        for path in ("/api/items", "/api/items/status-summary"):
            r = client.get(path + query_string, headers=auth(settings, "mreyes"))
            assert (r.status_code, r.json()) == (400, {"error": "projectId is required"})


@pytest.mark.parametrize("query_string", ["?projectId=1&projectId=2", "?projectId[a]=1", "?projectId[]=1"])
def test_query_arrays_and_objects_are_400_not_500(settings: Settings, query_string: str) -> None:
    with api(settings) as client:
        r = client.get("/api/items" + query_string, headers=auth(settings, "mreyes"))
    assert r.status_code == 400
    assert "error" in r.json()


def test_hex_and_padded_project_ids_work_like_js_number(settings: Settings) -> None:
    with api(settings) as client:
        hexed = client.get("/api/items?projectId=0x2", headers=auth(settings, "mreyes"))
        padded = client.get("/api/items?projectId=%202%20", headers=auth(settings, "mreyes"))
    assert hexed.json() == call("GET /api/items", 1)["response"]
    assert padded.json() == hexed.json()


def test_creating_items_matches_the_reference_codes_and_labels(fresh_db: Settings) -> None:
    with api(fresh_db) as client:
        replay(client, fresh_db, "POST /api/items", 0)
        after = client.get("/api/items?projectId=1", headers=auth(fresh_db, "admin")).json()
        replay(client, fresh_db, "POST /api/items", 2)
    assert without_timestamps(after) == without_timestamps(call("GET /api/items", 2)["response"])
    created = after[-1]
    assert created["createdAt"] == created["updatedAt"]
    assert created["createdAt"].endswith(".000Z")


def test_items_without_category_in_a_new_project_are_na_labelled(fresh_db: Settings) -> None:
    query(fresh_db, "INSERT INTO projects (id, name, type_code, item_id, unit_id) VALUES (4, 'Maps', 'IM', 3, 2)")
    with api(fresh_db) as client:
        r = client.post("/api/items", headers=auth(fresh_db, "admin"), json={"projectId": 4, "userId": 2})
    assert r.status_code == 201
    assert r.json() == {"items": [{"id": 9, "code": "NA-4.9-1-1"}]}
    row = query(fresh_db, "SELECT label, item_type_id, unit_type_id, status_id FROM items WHERE id = 9")[0]
    assert row == {"label": "NA Map1", "item_type_id": 3, "unit_type_id": 2, "status_id": None}


def test_the_creator_is_taken_from_the_token_not_the_body(fresh_db: Settings) -> None:
    with api(fresh_db) as client:
        r = client.post("/api/items", headers=auth(fresh_db, "mreyes"), json={"projectId": 1, "userId": 1})
    item_id = r.json()["items"][0]["id"]
    assert query(fresh_db, "SELECT created_by_user_id FROM items WHERE id = %s", (item_id,)) == [
        {"created_by_user_id": 2}
    ]


def test_with_auth_off_the_creator_comes_from_the_body(fresh_db: Settings) -> None:
    with api(fresh_db, auth_required=False) as client:
        r = client.post("/api/items", json={"projectId": 1, "userId": "3"})
        bad = client.post("/api/items", json={"projectId": 1, "userId": "abc"})
        unknown = client.post("/api/items", json={"projectId": 1, "userId": 999})
    item_id = r.json()["items"][0]["id"]
    assert query(fresh_db, "SELECT created_by_user_id FROM items WHERE id = %s", (item_id,)) == [
        {"created_by_user_id": 3}
    ]
    assert (bad.status_code, bad.json()) == (400, {"error": "userId must be a number"})
    assert (unknown.status_code, unknown.json()) == (400, {"error": "userId does not refer to a user"})


@pytest.mark.parametrize(("count", "created"), [(None, 1), (0, 1), (-5, 1), ("2", 2), (2.5, 3), ("", 1)])
def test_count_keeps_the_old_rounding_and_minimum(fresh_db: Settings, count: object, created: int) -> None:
    with api(fresh_db) as client:
        r = client.post("/api/items", headers=auth(fresh_db, "admin"), json={"projectId": 2, "count": count})
    assert r.status_code == 201
    assert len(r.json()["items"]) == created


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"count": "abc"}, "count must be at least 1"),
        ({"count": "Infinity"}, "count must be at least 1"),
        ({"count": {"n": 1}}, "count must be at least 1"),
        ({"count": 10**12}, "count must be at most 1000"),
        ({"count": 1001}, "count must be at most 1000"),
        ({"categoryId": "abc"}, "categoryId must be a number"),
        ({"categoryId": 999}, "Category not found"),
        ({"projectId": None}, "projectId is required"),
        ({"projectId": "Infinity"}, "projectId is required"),
        ({"projectId": [1, 2]}, "projectId is required"),
    ],
)
def test_invalid_item_requests_are_400_and_write_nothing(
    fresh_db: Settings, body: dict[str, object], error: str
) -> None:
    with api(fresh_db) as client:
        r = client.post("/api/items", headers=auth(fresh_db, "admin"), json={"projectId": 1, **body})
    assert (r.status_code, r.json()) == (400, {"error": error})
    assert query(fresh_db, "SELECT COUNT(*) AS n FROM items")[0]["n"] == 8
    assert open_transactions(fresh_db) == 0


def test_the_404_and_missing_item_type_branches_leave_no_transaction_open(fresh_db: Settings) -> None:
    query(fresh_db, "INSERT INTO projects (id, name, item_id) VALUES (4, 'No item type', NULL)")
    with api(fresh_db) as client:
        missing = client.post("/api/items", headers=auth(fresh_db, "admin"), json={"projectId": 999})
        untyped = client.post("/api/items", headers=auth(fresh_db, "admin"), json={"projectId": 4})
        assert open_transactions(fresh_db) == 0
        # The pooled connections are clean: the next write commits and is visible to another session.
        ok = client.post("/api/items", headers=auth(fresh_db, "admin"), json={"projectId": 1})
        new_id = ok.json()["items"][0]["id"]
        assert query(fresh_db, "SELECT COUNT(*) AS n FROM items WHERE id = %s", (new_id,))[0]["n"] == 1
    assert (missing.status_code, missing.json()) == (404, {"error": "Project not found"})
    assert (untyped.status_code, untyped.json()) == (400, {"error": "Project is missing item type."})


def test_concurrent_creates_get_distinct_sequences_on_a_real_server(fresh_db: Settings) -> None:
    """Twenty simultaneous POSTs for one project and category: every item gets its own project and category
    sequence number (the old COUNT-based code handed the same numbers to racing requests)."""
    settings = dataclasses.replace(fast(fresh_db), db_pool_size=10)
    headers = {"Authorization": f"Bearer {token(settings, 'mreyes')}"}
    requests = 20

    async def create_all(base_url: str) -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
            return await asyncio.gather(
                *(
                    client.post("/api/items", headers=headers, json={"projectId": 1, "categoryId": 2})
                    for _ in range(requests)
                )
            )

    with running("ccsm_api", settings) as server:
        responses = asyncio.run(create_all(server.base_url))
    assert [r.status_code for r in responses] == [201] * requests
    codes = [item["code"] for r in responses for item in r.json()["items"]]
    project_seqs = sorted(int(code.split("-")[2]) for code in codes)
    category_seqs = sorted(int(code.split("-")[3]) for code in codes)
    # Project 1 has 4 seeded items, 2 of them in category 2 (Criminal).
    assert project_seqs == list(range(5, 5 + requests))
    assert category_seqs == list(range(3, 3 + requests))
    labels = query(fresh_db, "SELECT label FROM items WHERE project_id = 1 AND item_category_id = 2 ORDER BY id")
    assert len({row["label"] for row in labels}) == requests + 2
