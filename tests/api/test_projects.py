"""`/api/projects` (contract-work §2): the recorded responses, and the round-trip fixes I-9 to I-13."""

from __future__ import annotations

from typing import Any

from ccsm_core.settings import Settings
from tests.api.work_support import api, auth, call, execute, query, replay, snapshot


def _without_status_ids(body: dict[str, Any]) -> dict[str, Any]:
    """P2 adds `statusId` to each itemTracking row (I-10); everything else is the old body."""
    out = dict(body)
    out["itemTracking"] = [{k: v for k, v in s.items() if k != "statusId"} for s in body["itemTracking"]]
    return out


def _canonical(body: dict[str, Any], data_ids: bool = True) -> dict[str, Any]:
    """The old order of `tasks` and `rolesId` came from the query plan (no ORDER BY); compare them as sets."""
    out = _without_status_ids(body)
    out["tasks"] = sorted(
        (
            {
                **t,
                "rolesId": sorted(t["rolesId"]),
                "taskData": [d if data_ids else {k: v for k, v in d.items() if k != "id"} for d in t["taskData"]],
            }
            for t in out["tasks"]
        ),
        key=lambda t: t["taskId"],
    )
    return out


def _form_payload(details: dict[str, Any]) -> dict[str, Any]:
    """What the web ProjectsPage sends back after loading P2 unchanged (contract-work §2 P2/P4 "Client use")."""
    p = details["project"]
    return {
        "project": {k: p[k] for k in ("name", "type_code", "project_status_id", "customer_id", "item_id", "unit_id")},
        "team": details["team"],
        "tasks": [
            {
                "taskId": t["taskId"],
                "taskTitle": t["taskTitle"],
                "taskTempId": None,
                "categoryId": t["categoryId"],
                "rolesId": t["rolesId"],
                "taskData": [
                    {
                        "dataDefId": d["dataDefId"],
                        "valueType": d["valueType"],
                        "value": "" if d["value"] is None else str(d["value"]),
                        "isRequired": d["isRequired"],
                    }
                    for d in t["taskData"]
                ],
            }
            for t in details["tasks"]
        ],
        "itemTracking": [
            {
                "statusText": s["statusText"],
                "statusMoment": "task_finished" if s["applyAfterFinish"] else "task_started",
                "taskRefs": [{"taskId": i} for i in s["taskIds"]],
            }
            for s in details["itemTracking"]
        ],
    }


def test_project_list_matches_the_recorded_response(fresh_db: Settings) -> None:
    with api(fresh_db) as client:
        replay(client, fresh_db, "GET /api/projects", 0)
        replay(client, fresh_db, "GET /api/projects", 1)


def test_project_details_match_the_recorded_responses_for_every_seed_project(fresh_db: Settings) -> None:
    with api(fresh_db) as client:
        for index in (0, 1, 2):
            rec = call("GET /api/projects/:id", index)
            r = client.get(rec["url"], headers=auth(fresh_db, "admin"))
            assert r.status_code == 200
            assert _canonical(r.json()) == _canonical(rec["response"])
        replay(client, fresh_db, "GET /api/projects/:id", 3)


def _task_order(body: dict[str, Any]) -> list[tuple[int, list[int]]]:
    return [(t["taskId"], t["rolesId"]) for t in body["tasks"]]


def test_tasks_and_their_roles_come_in_the_old_backends_index_order(fresh_db: Settings) -> None:
    # Project 2's rows in id order are (6: 5), (34: 5), (7: 5), (7: 1); the old backend read them through the
    # (project_id, role_id) index, i.e. in (role_id, id) order, and recorded 7 [1, 5], 6, 34.
    recorded = call("GET /api/projects/:id", 1)
    assert recorded["url"] == "/api/projects/2"
    # Project 3 gets rows whose id order (27, 8, 6) differs from their (role_id, id) order (27, 6, 8).
    execute(
        fresh_db,
        "INSERT INTO project_task_roles (id, project_id, task_id, role_id) VALUES (20, 3, 8, 5), (21, 3, 6, 1), "
        "(22, 3, 8, 1)",
    )
    with api(fresh_db) as client:
        two = client.get("/api/projects/2", headers=auth(fresh_db, "admin")).json()
        three = client.get("/api/projects/3", headers=auth(fresh_db, "admin")).json()
    assert _task_order(two) == _task_order(recorded["response"]) == [(7, [1, 5]), (6, [5]), (34, [5])]
    assert _task_order(three) == [(27, [1, 5]), (6, [1]), (8, [1, 5])]


def test_project_details_name_each_status_by_its_id(fresh_db: Settings) -> None:
    with api(fresh_db) as client:
        body = client.get("/api/projects/3", headers=auth(fresh_db, "admin")).json()
    assert [(s["statusText"], s["statusId"]) for s in body["itemTracking"]] == [
        ("Done", 9),
        ("In Progress", 8),
        ("To Do", 7),
    ]


def test_an_id_that_is_not_a_number_is_a_400_and_customers_are_forbidden(fresh_db: Settings) -> None:
    with api(fresh_db) as client:
        r = client.get("/api/projects/abc", headers=auth(fresh_db, "admin"))
        assert (r.status_code, r.json()) == (400, {"error": "Invalid project id"})
        r = client.get("/api/projects/1", headers=auth(fresh_db, "customer"))
        assert (r.status_code, r.json()) == (403, {"error": "Forbidden"})
        r = client.get("/api/projects")
        assert (r.status_code, r.json()) == (401, {"error": "Missing bearer token"})


def test_creating_and_reshaping_a_project_gives_the_recorded_configuration(fresh_db: Settings) -> None:
    with api(fresh_db) as client:
        replay(client, fresh_db, "POST /api/projects", 0)
        created = client.get("/api/projects/4", headers=auth(fresh_db, "admin")).json()
        assert _canonical(created) == _canonical(call("GET /api/projects/:id", 4)["response"])
        replay(client, fresh_db, "PUT /api/projects/:id", 0)
        updated = client.get("/api/projects/4", headers=auth(fresh_db, "admin")).json()
        # I-13: the kept task-data row keeps its id (13); the old backend re-inserted every row (16, 17, 18)
        assert _canonical(updated, data_ids=False) == _canonical(call("GET /api/projects/:id", 5)["response"], False)
        flattening = [t["taskData"] for body in (created, updated) for t in body["tasks"] if t["taskId"] == 39]
        assert [d["id"] for d in flattening[0] if d["dataDefId"] == 2] == [d["id"] for d in flattening[1]] == [13]
        replay(client, fresh_db, "POST /api/projects", 1)
        replay(client, fresh_db, "PUT /api/projects/:id", 1)


def test_saving_a_project_unchanged_leaves_every_table_byte_for_byte_the_same(fresh_db: Settings) -> None:
    # I-9: a project task without any role row, with task data, must survive a web save.
    execute(
        fresh_db,
        "INSERT INTO project_tasks (id, project_id, task_id, order_number, is_mandatory) VALUES (20, 1, 8, 6, 1)",
    )
    execute(
        fresh_db,
        "INSERT INTO project_task_data (project_task_id, data_def_id, is_required, value_datetime, created_at) "
        "VALUES (20, 7, 1, NULL, '2025-05-01 10:00:00'), (20, 6, 0, NULL, '2025-05-01 10:00:00')",
    )
    execute(
        fresh_db,
        "UPDATE project_task_data SET value_text = 'Seal the box' WHERE project_task_id = 20 AND data_def_id = 6",
    )
    before = snapshot(fresh_db)
    with api(fresh_db) as client:
        for project_id in (1, 2, 3):
            details = client.get(f"/api/projects/{project_id}", headers=auth(fresh_db, "admin")).json()
            r = client.put(f"/api/projects/{project_id}", headers=auth(fresh_db, "admin"), json=_form_payload(details))
            assert (r.status_code, r.json()) == (200, {"id": project_id})
            again = client.get(f"/api/projects/{project_id}", headers=auth(fresh_db, "admin")).json()
            assert again == details
    assert snapshot(fresh_db) == before


def test_a_task_without_roles_is_listed_with_its_task_data(fresh_db: Settings) -> None:
    execute(
        fresh_db,
        "INSERT INTO project_tasks (id, project_id, task_id, order_number, is_mandatory) VALUES (20, 3, 8, 2, 1)",
    )
    execute(
        fresh_db, "INSERT INTO project_task_data (id, project_task_id, data_def_id, value_int) VALUES (30, 20, 1, 12)"
    )
    with api(fresh_db) as client:
        body = client.get("/api/projects/3", headers=auth(fresh_db, "admin")).json()
    assert body["tasks"][-1] == {
        "taskId": 8,
        "taskTitle": "Delivery packaging",
        "categoryId": 5,
        "rolesId": [],
        "taskData": [{"id": 30, "dataDefId": 1, "valueType": "int", "value": 12, "isRequired": 0}],
        "projectTaskId": 20,
    }


def test_renaming_a_status_in_the_form_keeps_its_id_and_the_items_in_it(fresh_db: Settings) -> None:
    with api(fresh_db) as client:
        details = client.get("/api/projects/1", headers=auth(fresh_db, "admin")).json()
        payload = _form_payload(details)
        for row in payload["itemTracking"]:
            if row["statusText"] == "Scanned":
                row["statusText"] = "Scanned (300 dpi)"
        r = client.put("/api/projects/1", headers=auth(fresh_db, "admin"), json=payload)
        assert r.status_code == 200
    assert query(fresh_db, "SELECT id, label FROM ref_item_status WHERE id = 3") == [
        {"id": 3, "label": "Scanned (300 dpi)"}
    ]
    assert query(fresh_db, "SELECT status_id FROM items WHERE id = 1") == [{"status_id": 3}]
    assert query(fresh_db, "SELECT task_status_id FROM cfs_items WHERE id = 1") == [{"task_status_id": 3}]


def test_a_status_id_sent_back_wins_over_its_label(fresh_db: Settings) -> None:
    with api(fresh_db) as client:
        details = client.get("/api/projects/3", headers=auth(fresh_db, "admin")).json()
        payload = _form_payload(details)
        payload["itemTracking"] = [
            {"statusId": 8, "statusText": "Doing", "statusMoment": "task_started", "taskRefs": [{"taskId": 27}]},
            {"statusId": 9, "statusText": "Done", "statusMoment": "task_finished", "taskRefs": [{"taskId": 27}]},
        ]
        assert client.put("/api/projects/3", headers=auth(fresh_db, "admin"), json=payload).status_code == 200
    assert query(fresh_db, "SELECT id, label FROM ref_item_status WHERE project_id = 3 ORDER BY id") == [
        {"id": 8, "label": "Doing"},
        {"id": 9, "label": "Done"},
    ]
    # item 7 was "In Progress" (8) and keeps it; item 8 was "To Do" (7), which was removed
    assert query(fresh_db, "SELECT id, status_id FROM items WHERE project_id = 3 ORDER BY id") == [
        {"id": 7, "status_id": 8},
        {"id": 8, "status_id": None},
    ]


def test_a_missing_project_status_keeps_the_current_one(fresh_db: Settings) -> None:
    execute(fresh_db, "UPDATE projects SET project_status_id = 2 WHERE id = 2")
    with api(fresh_db) as client:
        details = client.get("/api/projects/2", headers=auth(fresh_db, "admin")).json()
        payload = _form_payload(details)
        payload["project"]["project_status_id"] = None
        assert client.put("/api/projects/2", headers=auth(fresh_db, "admin"), json=payload).status_code == 200
    assert query(fresh_db, "SELECT project_status_id FROM projects WHERE id = 2") == [{"project_status_id": 2}]


def test_saving_an_unknown_project_is_a_404_that_writes_nothing(fresh_db: Settings) -> None:
    before = snapshot(fresh_db)
    body = call("PUT /api/projects/:id", 0)["body"]
    with api(fresh_db) as client:
        r = client.put("/api/projects/999", headers=auth(fresh_db, "admin"), json=body)
        assert (r.status_code, r.json()) == (404, {"error": "Project not found"})
        r = client.put("/api/projects/999/jira", headers=auth(fresh_db, "admin"), json={"isJira": 1})
        assert (r.status_code, r.json()) == (404, {"error": "Project not found"})
    assert snapshot(fresh_db) == before


def test_the_jira_flag_is_set_like_the_recording_and_normalised_to_0_or_1(fresh_db: Settings) -> None:
    with api(fresh_db) as client:
        replay(client, fresh_db, "PUT /api/projects/:id/jira", 0)
        assert query(fresh_db, "SELECT is_jira FROM projects WHERE id = 2") == [{"is_jira": 1}]
        replay(client, fresh_db, "PUT /api/projects/:id/jira", 1)
        replay(client, fresh_db, "PUT /api/projects/:id/jira", 2)
        assert query(fresh_db, "SELECT is_jira FROM projects WHERE id = 2") == [{"is_jira": 0}]
        r = client.put("/api/projects/2/jira", headers=auth(fresh_db, "admin"), json={"is_jira": "true"})
        assert r.status_code == 200
        assert query(fresh_db, "SELECT is_jira FROM projects WHERE id = 2") == [{"is_jira": 0}]  # Number("true")


def test_unknown_references_and_wrong_shapes_are_400s_not_500s(fresh_db: Settings) -> None:
    before = snapshot(fresh_db)
    bad_bodies = [
        {"project": {"name": "X"}, "team": [{"userId": 999, "roleId": 1}]},
        {"project": {"name": "X", "customer_id": 999}},
        {"project": {"name": "X", "type_code": "NOPE"}},
        {"project": {"name": "X"}, "tasks": {"taskId": 1}},
        {"project": {"name": "X"}, "tasks": [{"taskId": 1, "rolesId": [77]}]},
        {"project": {"name": "X"}, "tasks": [{"taskId": 1, "taskData": [{"dataDefId": 99, "value": "1"}]}]},
        {"project": {"name": {"a": 1}}},
        {"project": {"name": "X", "item_id": "abc"}},
    ]
    with api(fresh_db) as client:
        for body in bad_bodies:
            r = client.post("/api/projects", headers=auth(fresh_db, "admin"), json=body)
            assert r.status_code == 400, body
            assert set(r.json()) == {"error"}
    assert snapshot(fresh_db) == before


def test_task_data_values_round_trip_through_the_form_strings(fresh_db: Settings) -> None:
    execute(
        fresh_db,
        "INSERT INTO task_data_definitions (id, `key`, label, value_type) VALUES (9, 'due', 'Due', 'datetime')",
    )
    execute(
        fresh_db, "INSERT INTO task_data_definitions (id, `key`, label, value_type) VALUES (10, 'meta', 'Meta', 'json')"
    )
    payload = {
        "project": {"name": "Round trip"},
        "tasks": [
            {
                "taskId": 1,
                "rolesId": [5],
                "taskData": [
                    {"dataDefId": 9, "valueType": "datetime", "value": "2026-03-01T10:30"},
                    {"dataDefId": 10, "valueType": "json", "value": '{"a": [1, 2]}'},
                    {"dataDefId": 8, "valueType": "varchar", "value": "2.5"},
                ],
            }
        ],
    }
    with api(fresh_db) as client:
        r = client.post("/api/projects", headers=auth(fresh_db, "admin"), json=payload)
        assert r.status_code == 201
        project_id = r.json()["id"]
        details = client.get(f"/api/projects/{project_id}", headers=auth(fresh_db, "admin")).json()
        values = {d["dataDefId"]: d["value"] for d in details["tasks"][0]["taskData"]}
        # the definition's type picks the column (I-13): definition 8 is a decimal whatever the client says
        assert values == {8: "2.5000", 9: "2026-03-01T10:30:00.000Z", 10: '{"a": [1, 2]}'}
        before = snapshot(fresh_db)
        r = client.put(f"/api/projects/{project_id}", headers=auth(fresh_db, "admin"), json=_form_payload(details))
        assert r.status_code == 200
    assert snapshot(fresh_db) == before


def test_payload_lists_over_their_caps_are_400s_that_write_nothing(fresh_db: Settings) -> None:
    # Issue 12 item 2: checked before any element is read; 17,500 rolesId used to cost 2.6 s of event loop.
    before = snapshot(fresh_db)
    name = {"name": "Too big"}
    with api(fresh_db) as client:
        for body, message in [
            ({"project": name, "team": [{"userId": 1, "roleId": 1}] * 1001}, "team must have at most 1000 entries"),
            ({"project": name, "tasks": [{"taskId": 1}] * 1001}, "tasks must have at most 1000 entries"),
            (
                {"project": name, "tasks": [{"taskId": 1, "rolesId": list(range(1, 102))}]},
                "tasks[].rolesId must have at most 100 entries",
            ),
            (
                {"project": name, "tasks": [{"taskId": 1, "taskData": [{"dataDefId": 1}] * 101}]},
                "tasks[].taskData must have at most 100 entries",
            ),
            (
                {"project": name, "itemTracking": [{"statusText": "s", "taskRefs": [{"taskId": 1}] * 1001}]},
                "itemTracking[].taskRefs must have at most 1000 entries",
            ),
            (
                {"project": name, "tasks": [{"taskTitle": "new"}], "itemTracking": [{"statusText": "s"}] * 1001},
                "itemTracking must have at most 1000 entries",
            ),
        ]:
            for method, url in (("POST", "/api/projects"), ("PUT", "/api/projects/1")):
                r = client.request(method, url, headers=auth(fresh_db, "admin"), json=body)
                assert (r.status_code, r.json()) == (400, {"error": message}), (method, message)
    assert snapshot(fresh_db) == before


def test_repeated_tasks_roles_and_pairs_are_stored_once_in_payload_order(fresh_db: Settings) -> None:
    payload = {
        "project": {"name": "Repeats"},
        "team": [{"userId": 3, "roleId": 5}, {"userId": 2, "roleId": 5}, {"userId": 3, "roleId": 5}],
        "tasks": [
            {"taskId": 4, "rolesId": [5, 2, 5]},
            {"taskId": 2, "rolesId": [5]},
            {"taskId": 4, "rolesId": [3, 2]},  # the same task again: its roles join the first entry's
        ],
        "itemTracking": [{"statusText": "Done", "statusMoment": "task_finished", "taskRefs": [{"taskId": 4}] * 3}],
    }
    with api(fresh_db) as client:
        r = client.post("/api/projects", headers=auth(fresh_db, "admin"), json=payload)
        assert r.status_code == 201
        project_id = r.json()["id"]
    assert query(
        fresh_db, "SELECT user_id, project_role_id FROM project_users WHERE project_id = %s ORDER BY id", (project_id,)
    ) == [{"user_id": 3, "project_role_id": 5}, {"user_id": 2, "project_role_id": 5}]
    assert query(
        fresh_db, "SELECT task_id, role_id FROM project_task_roles WHERE project_id = %s ORDER BY id", (project_id,)
    ) == [
        {"task_id": 4, "role_id": 5},
        {"task_id": 4, "role_id": 2},
        {"task_id": 4, "role_id": 3},
        {"task_id": 2, "role_id": 5},
    ]
    assert query(
        fresh_db, "SELECT task_id, order_number FROM project_tasks WHERE project_id = %s ORDER BY id", (project_id,)
    ) == [{"task_id": 4, "order_number": 1}, {"task_id": 2, "order_number": 2}]
    links = query(
        fresh_db,
        "SELECT ist.task_id, ist.apply_after_finish FROM itemstatus_task ist "
        "JOIN ref_item_status ris ON ris.id = ist.item_status_id WHERE ris.project_id = %s",
        (project_id,),
    )
    assert links == [{"task_id": 4, "apply_after_finish": 1}]
