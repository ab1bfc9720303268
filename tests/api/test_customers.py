"""`/api/customers` (admin and employee): contract-core §5."""

from __future__ import annotations

import orjson
import pytest

from ccsm_core.settings import Settings
from tests.api.part1_support import api, auth, call, channel, expired_auth, next_message, query, replay

LOUDOUN = call("POST /api/customers", 0)["body"]


def test_employee_lists_customers_as_the_old_backend_did(fresh_db: Settings) -> None:
    with api(fresh_db) as client:
        replay(client, fresh_db, "GET /api/customers", 0)
        replay(client, fresh_db, "GET /api/customers", 1)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/customers"),
        ("POST", "/api/customers"),
        ("PUT", "/api/customers/1"),
        ("DELETE", "/api/customers/1"),
    ],
)
def test_customers_are_for_admins_and_employees_only(settings: Settings, method: str, path: str) -> None:
    with api(settings) as client:
        customer = client.request(method, path, headers=auth(settings, "customer"), json={})
        anonymous = client.request(method, path, json={})
        expired = client.request(method, path, headers=expired_auth(settings, "mreyes"), json={})
    assert (customer.status_code, customer.json()) == (403, {"error": "Forbidden"})
    assert (anonymous.status_code, anonymous.json()) == (401, {"error": "Missing bearer token"})
    assert (expired.status_code, expired.json()) == (401, {"error": "Invalid or expired token"})


def test_create_update_and_delete_answer_like_the_reference_transcript(fresh_db: Settings) -> None:
    with api(fresh_db) as client:
        for endpoint, count in [
            ("POST /api/customers", 2),
            ("PUT /api/customers/:id", 2),
            ("DELETE /api/customers/:id", 2),
        ]:
            for index in range(count):
                replay(client, fresh_db, endpoint, index)


def test_an_employee_may_create_and_values_are_trimmed(fresh_db: Settings) -> None:
    padded = {k: f"  {v}\n" for k, v in LOUDOUN.items()}
    with api(fresh_db) as client:
        r = client.post("/api/customers/", headers=auth(fresh_db, "mreyes"), json=padded)
    assert r.status_code == 201
    assert r.json() == {"id": 3, **LOUDOUN}
    assert query(fresh_db, "SELECT name FROM customers WHERE id = 3")[0]["name"] == LOUDOUN["name"]


def test_put_with_identical_values_is_200_not_404(fresh_db: Settings) -> None:
    current = query(fresh_db, "SELECT name, state, county, contact_name, contact_email, contact_phone FROM customers")
    with api(fresh_db) as client:
        r = client.put("/api/customers/1", headers=auth(fresh_db, "admin"), json=current[0])
    assert (r.status_code, r.json()) == (200, {"id": 1, **current[0]})


@pytest.mark.parametrize("bad_id", ["abc", "NaN", "1e400"])
def test_a_non_finite_customer_id_is_400(settings: Settings, bad_id: str) -> None:
    with api(settings) as client:
        put = client.put(f"/api/customers/{bad_id}", headers=auth(settings, "admin"), json=LOUDOUN)
        delete = client.delete(f"/api/customers/{bad_id}", headers=auth(settings, "admin"))
    assert (put.status_code, put.json()) == (400, {"error": "Invalid customer id"})
    assert (delete.status_code, delete.json()) == (400, {"error": "Invalid customer id"})


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"contact_phone": None}, "All fields are required"),
        ({"state": " "}, "All fields are required"),
        ({"name": {"x": 1}}, "Field 'name' has the wrong type"),
        ({"state": "V" * 65}, "A field value is too long or out of range"),
    ],
)
def test_invalid_customer_bodies_are_400(fresh_db: Settings, change: dict[str, object], error: str) -> None:
    with api(fresh_db) as client:
        r = client.post("/api/customers", headers=auth(fresh_db, "admin"), json={**LOUDOUN, **change})
    assert (r.status_code, r.json()) == (400, {"error": error})
    assert query(fresh_db, "SELECT COUNT(*) AS n FROM customers")[0]["n"] == 2


def test_deleting_a_customer_that_projects_use_detaches_those_projects(fresh_db: Settings) -> None:
    with api(fresh_db) as client:
        r = client.delete("/api/customers/1", headers=auth(fresh_db, "admin"))
    assert (r.status_code, r.json()) == (200, {"success": True})
    assert query(fresh_db, "SELECT customer_id FROM projects WHERE id = 1") == [{"customer_id": None}]


def test_a_customer_write_emits_db_changed_and_a_rejected_one_does_not(fresh_db: Settings) -> None:
    with api(fresh_db) as client, channel(fresh_db, "events:db-changed") as changes:
        commits: list[str] = []
        client.app_state["db"].on_commit(commits.append)
        missing = client.put("/api/customers/9999", headers=auth(fresh_db, "admin"), json=LOUDOUN)
        after_rejected = list(commits)
        created = client.post("/api/customers", headers=auth(fresh_db, "admin"), json=LOUDOUN)
        event = next_message(changes)
    assert missing.status_code == 404
    assert after_rejected == []
    assert created.status_code == 201
    assert commits == ["transaction-commit"]
    assert event is not None
    assert orjson.loads(event)["type"] == "db-changed"
