"""`/api/lookups/*` (any authenticated user): contract-core §6."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest

from ccsm_api.lookups import derive_key
from ccsm_core import migrations
from ccsm_core.db import connect_sync
from ccsm_core.settings import Settings
from tests import harness
from tests.api.part1_support import api, auth, call, expired_auth, query, replay
from tests.api.transcript import execute

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


@pytest.fixture
def older_schema(settings: Settings) -> Iterator[Settings]:
    """A database of its own, migrated and seeded, for a test to bend into an older schema."""
    scratch = dataclasses.replace(settings, db_name=f"{settings.db_name}_older")
    harness.create_test_database(scratch)
    try:
        yield scratch
    finally:
        migrations.drop_database(scratch, scratch.db_name)


def _form(settings: Settings) -> dict[str, Any]:
    with api(settings) as client:
        r = client.get("/api/lookups/project-form", headers=auth(settings, "admin"))
    assert r.status_code == 200
    body: dict[str, Any] = r.json()
    return body


def test_the_project_form_reads_an_older_units_table_with_labels(older_schema: Settings) -> None:
    current = _form(older_schema)
    execute(older_schema, "CREATE TABLE units (id INT PRIMARY KEY, label VARCHAR(50))")
    execute(older_schema, "INSERT INTO units VALUES (2, 'sheets'), (1, 'boxes')")
    body = _form(older_schema)
    assert body["units"] == [{"id": 1, "name": "boxes"}, {"id": 2, "name": "sheets"}]
    assert {k: v for k, v in body.items() if k != "units"} == {k: v for k, v in current.items() if k != "units"}
    assert list(body) == list(current)


def test_an_empty_older_units_table_falls_back_to_the_unit_types(older_schema: Settings) -> None:
    current = _form(older_schema)
    execute(older_schema, "CREATE TABLE units (id INT PRIMARY KEY, name VARCHAR(50))")
    assert _form(older_schema) == current
    assert current["units"] == query(older_schema, "SELECT id, name FROM ref_unit_types ORDER BY name")


def test_a_schema_without_task_data_definitions_gives_an_empty_list(older_schema: Settings) -> None:
    conn = connect_sync(older_schema, older_schema.db_name)
    try:
        conn.cursor().execute("SET FOREIGN_KEY_CHECKS = 0")
        conn.cursor().execute("DROP TABLE task_data_definitions")
    finally:
        conn.close()
    body = _form(older_schema)
    assert body["taskDataDefinitions"] == []
    assert body["units"] == query(older_schema, "SELECT id, name FROM ref_unit_types ORDER BY name")
