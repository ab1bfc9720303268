"""`/api/lookups/*` (any authenticated user): contract-core §6."""

from __future__ import annotations

import pytest

from ccsm_api.lookups import derive_key
from ccsm_core.settings import Settings
from tests.api.part1_support import api, auth, call, expired_auth, query, replay

PATHS = [
    "/api/lookups/project-form",
    "/api/lookups/task-data-definitions",
    "/api/lookups/task-categories",
    "/api/lookups/item-categories",
]


def test_project_form_matches_the_reference_for_every_role(fresh_db: Settings) -> None:
    with api(fresh_db) as client:
        replay(client, fresh_db, "GET /api/lookups/project-form", 0)
        replay(client, fresh_db, "GET /api/lookups/project-form", 1)
        body = client.get("/api/lookups/project-form", headers=auth(fresh_db, "mreyes")).json()
    assert list(body) == [
        "projectTypes",
        "statuses",
        "customers",
        "items",
        "units",
        "users",
        "roles",
        "tasks",
        "taskCategories",
        "itemStatuses",
        "taskDataDefinitions",
    ]


def test_the_other_lookups_match_the_reference(fresh_db: Settings) -> None:
    with api(fresh_db) as client:
        replay(client, fresh_db, "GET /api/lookups/task-data-definitions", 0)
        replay(client, fresh_db, "GET /api/lookups/task-categories", 0)
        replay(client, fresh_db, "GET /api/lookups/item-categories", 0)
        replay(client, fresh_db, "GET /api/lookups/item-categories", 1)


@pytest.mark.parametrize("path", PATHS)
def test_lookups_need_a_valid_token_but_accept_every_role(settings: Settings, path: str) -> None:
    with api(settings) as client:
        customer = client.get(path, headers=auth(settings, "customer"))
        anonymous = client.get(path)
        expired = client.get(path, headers=expired_auth(settings, "customer"))
        inactive = client.get(path, headers=auth(settings, "tbecker"))
    assert customer.status_code == 200
    assert (anonymous.status_code, anonymous.json()) == (401, {"error": "Missing bearer token"})
    assert (expired.status_code, expired.json()) == (401, {"error": "Invalid or expired token"})
    assert (inactive.status_code, inactive.json()) == (401, {"error": "Invalid or expired token"})


def test_creating_definitions_follows_the_reference_transcript(fresh_db: Settings) -> None:
    with api(fresh_db) as client:
        for index in range(4):
            replay(client, fresh_db, "POST /api/lookups/task-data-definitions", index)


def test_a_customer_may_create_a_definition_as_before(fresh_db: Settings) -> None:
    with api(fresh_db) as client:
        r = client.post(
            "/api/lookups/task-data-definitions", headers=auth(fresh_db, "customer"), json={"label": " Box weight "}
        )
    assert (r.status_code, r.json()) == (
        201,
        {"id": 9, "key": "box_weight", "label": "Box weight", "valueType": "varchar"},
    )


def test_a_duplicate_key_returns_the_stored_row_not_the_request(fresh_db: Settings) -> None:
    with api(fresh_db) as client:
        r = client.post(
            "/api/lookups/task-data-definitions",
            headers=auth(fresh_db, "admin"),
            json={"label": "Another pages label", "key": "pages_count", "valueType": "text"},
        )
    assert (r.status_code, r.json()) == (200, {"id": 1, "key": "pages_count", "label": "Pages", "valueType": "int"})


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"label": {"a": 1}}, "Field 'label' has the wrong type"),
        ({"label": "ok", "valueType": "x" * 50}, "A field value is too long or out of range"),
        ({"label": None, "key": "k"}, "label is required"),
    ],
)
def test_invalid_definitions_are_400(fresh_db: Settings, body: dict[str, object], error: str) -> None:
    with api(fresh_db) as client:
        r = client.post("/api/lookups/task-data-definitions", headers=auth(fresh_db, "admin"), json=body)
    assert (r.status_code, r.json()) == (400, {"error": error})
    assert query(fresh_db, "SELECT COUNT(*) AS n FROM task_data_definitions")[0]["n"] == 8


@pytest.mark.parametrize(
    ("label", "key"),
    [("Pages Count!", "pages_count"), ("  --Scan  DPI--", "scan_dpi"), ("Ящики", ""), ("A1 b2", "a1_b2")],
)
def test_keys_are_derived_from_labels_like_the_old_backend(label: str, key: str) -> None:
    assert derive_key(label) == key


def test_an_unknown_project_type_code_returns_every_category_as_before(settings: Settings) -> None:
    every = call("GET /api/lookups/item-categories", 0)["response"]
    with api(settings) as client:
        r = client.get("/api/lookups/item-categories?projectTypeCode=undefined", headers=auth(settings, "admin"))
    assert r.json() == every


def test_a_repeated_query_parameter_is_400_not_500(settings: Settings) -> None:
    with api(settings) as client:
        repeated = client.get(
            "/api/lookups/item-categories?projectTypeCode=CFS&projectTypeCode=IM", headers=auth(settings, "admin")
        )
        bracketed = client.get("/api/lookups/item-categories?projectTypeCode[a]=1", headers=auth(settings, "admin"))
    assert repeated.status_code == 400
    assert bracketed.status_code == 400
    assert "error" in repeated.json()


def test_with_auth_off_lookups_need_no_token(settings: Settings) -> None:
    with api(settings, auth_required=False) as client:
        r = client.get("/api/lookups/task-categories")
    assert r.json() == call("GET /api/lookups/task-categories", 0)["response"]
