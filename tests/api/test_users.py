"""`/api/users` (admin only): contract-core §4 and the fixes for core bugs 13, 14, 23 and fix 3."""

from __future__ import annotations

import bcrypt
import orjson
import pytest

from ccsm_core.settings import Settings
from tests.api.part1_support import (
    api,
    auth,
    call,
    channel,
    expired_auth,
    next_message,
    query,
    replay,
)

PROBE = {
    "first_name": "Probe",
    "last_name": "User",
    "email": "probe.user@ccsm.test",
    "login": "probeuser",
    "password": "Probe#2025",
    "authcode": "990",
    "system_role": 2,
    "is_active": True,
    "is_ccs": True,
}
MREYES = {
    "first_name": "Marco",
    "last_name": "Reyes",
    "email": "mreyes@ccsm.test",
    "login": "mreyes",
    "authcode": "777",
    "system_role": 2,
}


def test_admin_lists_every_user_and_the_roles_as_the_old_backend_did(fresh_db: Settings) -> None:
    with api(fresh_db) as client:
        replay(client, fresh_db, "GET /api/users", 0)
        replay(client, fresh_db, "GET /api/users/roles", 0)
        keys = list(client.get("/api/users", headers=auth(fresh_db, "admin")).json()[0])
    assert keys == ["id", "first_name", "last_name", "email", "login", "authcode", "system_role", "is_active", "is_ccs"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/users"),
        ("GET", "/api/users/roles"),
        ("POST", "/api/users"),
        ("PUT", "/api/users/2"),
        ("DELETE", "/api/users/2"),
    ],
)
def test_every_users_endpoint_is_for_admins_only(settings: Settings, method: str, path: str) -> None:
    with api(settings) as client:
        employee = client.request(method, path, headers=auth(settings, "mreyes"), json={})
        customer = client.request(method, path, headers=auth(settings, "customer"), json={})
        anonymous = client.request(method, path, json={})
        expired = client.request(method, path, headers=expired_auth(settings, "admin"), json={})
        inactive = client.request(method, path, headers=auth(settings, "tbecker"), json={})
    assert (employee.status_code, employee.json()) == (403, {"error": "Forbidden"})
    assert (customer.status_code, customer.json()) == (403, {"error": "Forbidden"})
    assert (anonymous.status_code, anonymous.json()) == (401, {"error": "Missing bearer token"})
    assert (expired.status_code, expired.json()) == (401, {"error": "Invalid or expired token"})
    assert (inactive.status_code, inactive.json()) == (401, {"error": "Invalid or expired token"})


def test_create_update_and_delete_answer_like_the_reference_transcript(fresh_db: Settings) -> None:
    with api(fresh_db) as client:
        for endpoint, url, count in [
            ("POST /api/users", None, 3),
            ("PUT /api/users/:id", None, 4),
            ("DELETE /api/users/:id", None, 2),
        ]:
            for index in range(count):
                replay(client, fresh_db, endpoint, index, url)


def test_created_password_is_trimmed_and_stored_as_bcrypt_2a(fresh_db: Settings) -> None:
    with api(fresh_db) as client:
        r = client.post("/api/users", headers=auth(fresh_db, "admin"), json={**PROBE, "password": "  Probe#2025\t"})
    assert r.status_code == 201
    assert "password" not in r.json()
    assert "authcode" not in r.json()
    stored = query(fresh_db, "SELECT password FROM users WHERE id = %s", (r.json()["id"],))[0]["password"]
    assert stored.startswith("$2a$08$")
    assert bcrypt.checkpw(b"Probe#2025", stored.encode())


def test_a_password_longer_than_72_bytes_is_hashed_from_its_first_72_bytes(fresh_db: Settings) -> None:
    long_password = "é" * 50  # 100 UTF-8 bytes
    with api(fresh_db) as client:
        r = client.post("/api/users", headers=auth(fresh_db, "admin"), json={**PROBE, "password": long_password})
    assert r.status_code == 201
    stored = query(fresh_db, "SELECT password FROM users WHERE id = %s", (r.json()["id"],))[0]["password"]
    assert bcrypt.checkpw(long_password.encode()[:72], stored.encode())


def test_missing_flags_on_create_mean_inactive_as_before(fresh_db: Settings) -> None:
    body = {k: v for k, v in PROBE.items() if k not in ("is_active", "is_ccs")}
    with api(fresh_db) as client:
        r = client.post("/api/users", headers=auth(fresh_db, "admin"), json={**body, "system_role": "3"})
    assert r.status_code == 201
    assert (r.json()["system_role"], r.json()["is_active"], r.json()["is_ccs"]) == (3, 0, 0)


def test_put_without_flags_leaves_is_active_and_is_ccs_unchanged(fresh_db: Settings) -> None:
    with api(fresh_db) as client:
        r = client.put("/api/users/2", headers=auth(fresh_db, "admin"), json={**MREYES, "first_name": "Marc"})
    assert r.status_code == 200
    assert (r.json()["is_active"], r.json()["is_ccs"]) == (1, 1)
    row = query(fresh_db, "SELECT first_name, is_active, is_ccs FROM users WHERE id = 2")[0]
    assert row == {"first_name": "Marc", "is_active": 1, "is_ccs": 1}


def test_put_without_password_keeps_the_stored_hash(fresh_db: Settings) -> None:
    before = query(fresh_db, "SELECT password FROM users WHERE id = 2")[0]["password"]
    with api(fresh_db) as client:
        r = client.put("/api/users/2", headers=auth(fresh_db, "admin"), json={**MREYES, "password": "   "})
    assert r.status_code == 200
    assert query(fresh_db, "SELECT password FROM users WHERE id = 2")[0]["password"] == before


def test_put_with_identical_values_is_200_because_matched_rows_count(fresh_db: Settings) -> None:
    with api(fresh_db) as client:
        first = client.put("/api/users/2", headers=auth(fresh_db, "admin"), json={**MREYES, "is_active": 1})
        second = client.put("/api/users/2", headers=auth(fresh_db, "admin"), json={**MREYES, "is_active": 1})
    assert (first.status_code, second.status_code) == (200, 200)


def test_put_for_an_unknown_id_is_404_even_when_the_login_clashes(fresh_db: Settings) -> None:
    with api(fresh_db) as client:
        r = client.put("/api/users/9999", headers=auth(fresh_db, "admin"), json={**MREYES, "login": "admin"})
    assert (r.status_code, r.json()) == (404, {"error": "User not found"})


@pytest.mark.parametrize("bad_id", ["abc", "Infinity", "1e999", "%5B1%5D"])
def test_a_non_finite_user_id_is_400(settings: Settings, bad_id: str) -> None:
    with api(settings) as client:
        put = client.put(f"/api/users/{bad_id}", headers=auth(settings, "admin"), json=MREYES)
        delete = client.delete(f"/api/users/{bad_id}", headers=auth(settings, "admin"))
    assert (put.status_code, put.json()) == (400, {"error": "Invalid user id"})
    assert (delete.status_code, delete.json()) == (400, {"error": "Invalid user id"})


@pytest.mark.parametrize("odd_id", ["0", "-3", "1.5", "0x7B"])
def test_a_finite_id_that_is_no_row_is_404(fresh_db: Settings, odd_id: str) -> None:
    with api(fresh_db) as client:
        r = client.delete(f"/api/users/{odd_id}", headers=auth(fresh_db, "admin"))
    assert (r.status_code, r.json()) == (404, {"error": "User not found"})


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"system_role": None}, "All fields are required"),
        ({"login": "   "}, "All fields are required"),
        ({"password": ""}, "All fields are required"),
        ({"system_role": "admin"}, "system_role must be a number"),
        ({"system_role": {"id": 1}}, "system_role must be a number"),
        ({"system_role": [1, 2]}, "system_role must be a number"),
        ({"system_role": 99}, "Unknown system_role"),
        ({"email": {"a": 1}}, "Field 'email' has the wrong type"),
        ({"first_name": ["x", "y"]}, "Field 'first_name' has the wrong type"),
        ({"first_name": "x" * 500}, "A field value is too long or out of range"),
        ({"system_role": -1}, "A field value is too long or out of range"),
    ],
)
def test_invalid_user_bodies_are_400_never_500(fresh_db: Settings, change: dict[str, object], error: str) -> None:
    with api(fresh_db) as client:
        r = client.post("/api/users", headers=auth(fresh_db, "admin"), json={**PROBE, **change})
    assert (r.status_code, r.json()) == (400, {"error": error})


def test_malformed_json_and_array_bodies_are_400(settings: Settings) -> None:
    with api(settings) as client:
        broken = client.post(
            "/api/users",
            headers={**auth(settings, "admin"), "content-type": "application/json"},
            content=b'{"first_name": ',
        )
        array = client.post("/api/users", headers=auth(settings, "admin"), json=[PROBE])
    assert broken.status_code == 400
    assert array.status_code == 400
    assert "error" in broken.json()
    assert "error" in array.json()


def test_duplicate_email_with_other_case_is_409(fresh_db: Settings) -> None:
    with api(fresh_db) as client:
        r = client.post(
            "/api/users", headers=auth(fresh_db, "admin"), json={**PROBE, "email": "ADMIN@ccsm.test", "login": "x"}
        )
    assert (r.status_code, r.json()) == (409, call("POST /api/users", 1)["response"])


def test_deactivating_a_user_locks_them_out_at_once_and_is_published(fresh_db: Settings) -> None:
    with api(fresh_db) as client, channel(fresh_db, "events:revocations") as revocations:
        before = client.get("/api/customers", headers=auth(fresh_db, "mreyes"))
        r = client.put("/api/users/2", headers=auth(fresh_db, "admin"), json={**MREYES, "is_active": 0})
        after = client.get("/api/customers", headers=auth(fresh_db, "mreyes"))
        published = next_message(revocations)
    assert before.status_code == 200
    assert r.json()["is_active"] == 0
    assert (after.status_code, after.json()) == (401, {"error": "Invalid or expired token"})
    assert published == b"2"


def test_demoting_a_user_takes_effect_before_the_cache_window_ends(fresh_db: Settings) -> None:
    with api(fresh_db) as client, channel(fresh_db, "events:revocations") as revocations:
        before = client.get("/api/customers", headers=auth(fresh_db, "mreyes"))
        client.put("/api/users/2", headers=auth(fresh_db, "admin"), json={**MREYES, "system_role": 3})
        after = client.get("/api/customers", headers=auth(fresh_db, "mreyes"))
        published = next_message(revocations)
    assert before.status_code == 200
    assert (after.status_code, after.json()) == (403, {"error": "Forbidden"})
    assert published == b"2"


def test_deleting_a_user_revokes_them(fresh_db: Settings) -> None:
    with api(fresh_db) as client:
        created = client.post("/api/users", headers=auth(fresh_db, "admin"), json=PROBE).json()
        with channel(fresh_db, "events:revocations") as revocations:
            r = client.delete(f"/api/users/{created['id']}/", headers=auth(fresh_db, "admin"))
            published = next_message(revocations)
    assert (r.status_code, r.json()) == (200, {"success": True})
    assert published == str(created["id"]).encode()


def test_deleting_a_user_that_records_refer_to_is_409_not_500(fresh_db: Settings) -> None:
    with api(fresh_db) as client:
        r = client.delete("/api/users/2", headers=auth(fresh_db, "admin"))
    assert (r.status_code, r.json()) == (409, {"error": "User is referenced by other records"})
    assert query(fresh_db, "SELECT COUNT(*) AS n FROM users WHERE id = 2")[0]["n"] == 1


def test_a_user_write_emits_db_changed_after_the_commit(fresh_db: Settings) -> None:
    with api(fresh_db) as client, channel(fresh_db, "events:db-changed") as changes:
        r = client.post("/api/users", headers=auth(fresh_db, "admin"), json=PROBE)
        event = next_message(changes)
    assert r.status_code == 201
    assert event is not None
    assert orjson.loads(event)["reason"] == "transaction-commit"


def test_with_auth_off_the_users_endpoints_need_no_token(fresh_db: Settings) -> None:
    with api(fresh_db, auth_required=False) as client:
        listed = client.get("/API/Users/")
        created = client.post("/api/users", json=PROBE)
    assert listed.status_code == 200
    assert [u["login"] for u in listed.json()] == ["admin", "mreyes", "pnair", "tbecker", "pwcourt"]
    assert created.status_code == 201


# --- issue 12 item 1: AUTHCODE_MIN_LENGTH ---------------------------------------------------------------------


def test_creating_a_user_with_a_code_below_the_minimum_is_400_with_the_rule(fresh_db: Settings) -> None:
    with api(fresh_db, authcode_min_length=6) as client:
        short = client.post("/api/users", headers=auth(fresh_db, "admin"), json={**PROBE, "authcode": "12345"})
        long_enough = client.post("/api/users", headers=auth(fresh_db, "admin"), json={**PROBE, "authcode": "123456"})
    assert (short.status_code, short.json()) == (400, {"error": "authcode must be at least 6 characters"})
    assert long_enough.status_code == 201
    assert query(fresh_db, "SELECT COUNT(*) AS n FROM users WHERE authcode = '12345'") == [{"n": 0}]


def test_changing_a_code_to_one_below_the_minimum_is_400_but_sending_the_stored_short_code_back_is_not(
    fresh_db: Settings,
) -> None:
    """The UsersPage sends every field back on each edit: a user whose code predates the policy stays editable."""
    with api(fresh_db, authcode_min_length=6) as client:
        admin = auth(fresh_db, "admin")
        changed = client.put("/api/users/2", headers=admin, json={**MREYES, "authcode": "778"})
        unchanged = client.put("/api/users/2", headers=admin, json={**MREYES, "first_name": "Marc"})
        other_short = client.put("/api/users/2", headers=admin, json={**MREYES, "authcode": "ab1"})
        longer = client.put("/api/users/2", headers=admin, json={**MREYES, "first_name": "Marc", "authcode": "778899"})
    assert (changed.status_code, changed.json()) == (400, {"error": "authcode must be at least 6 characters"})
    assert unchanged.status_code == 200
    assert other_short.status_code == 400
    assert longer.status_code == 200
    assert query(fresh_db, "SELECT first_name, authcode FROM users WHERE id = 2") == [
        {"first_name": "Marc", "authcode": "778899"}
    ]


def test_with_no_minimum_the_contracts_short_codes_are_accepted(fresh_db: Settings) -> None:
    with api(fresh_db, authcode_min_length=0) as client:
        r = client.post("/api/users", headers=auth(fresh_db, "admin"), json={**PROBE, "authcode": "9"})
    assert r.status_code == 201
