"""The desktop's call sequence of contract-work §4.18 through every service at once (the dev server's
composition, the URL table's order): login by code with the auth service, then the api's facade with that token."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from starlette.testclient import TestClient

import devserver
from ccsm_core.settings import Settings
from tests.api.work_support import query


@contextmanager
def everything(settings: Settings) -> Iterator[TestClient]:
    with TestClient(devserver.create_app(dataclasses.replace(settings, service="dev", bcrypt_rounds=8))) as client:
        yield client


def test_login_by_code_then_a_task_completed_twice_at_once_is_recorded_once(fresh_db: Settings) -> None:
    with everything(fresh_db) as client:
        login = client.post("/api/desktop/login-authcode", json={"code": "888"})
        assert login.status_code == 200
        me = login.json()
        assert (me["id"], me["login"], me["tokenType"]) == (3, "pnair", "Bearer")
        h = {"Authorization": f"Bearer {me['accessToken']}"}

        def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
            r = client.post(f"/api/desktop/{path}", headers=h, json=body)
            assert r.status_code == 200, (path, r.text)
            answer: dict[str, Any] = r.json()
            return answer

        boot = client.get("/api/desktop/bootstrap", headers=h)
        assert boot.status_code == 200
        assert [u["login"] for u in boot.json()["users"]] == ["pnair"]
        assert post("activities/start-unallocated", {"uuid": "flow-s1", "user_id": 3, "activity_id": 4}) == {
            "success": True
        }
        assert client.get("/api/desktop/unfinished-tasks", headers=h).json()[0]["id"] == 6
        assert [a["id"] for a in client.get("/api/desktop/assignments", headers=h).json()] == [2, 1]
        post("activities/complete", {"uuid": "flow-s1", "user_id": 3, "is_completed_project_task": False})
        post("activities/start-task", {"uuid": "flow-t1", "user_id": 3, "project_id": 1, "task_id": 5, "item_id": 4})
        post("assignment-accepted", {"assignmentId": 1})
        # FINISH, sent directly and from the queue at the same moment
        done = {"uuid": "flow-t1", "user_id": 3, "is_completed_project_task": True, "note": "QC passed"}
        answers: list[dict[str, Any]] = []
        barrier = threading.Barrier(2)

        def finish() -> None:
            barrier.wait(timeout=10)
            answers.append(post("activities/complete", done))

        threads = [threading.Thread(target=finish) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=20)
        assert sorted(answers, key=len) == [{"success": True}, {"success": True, "duplicate": True}]
        rule = client.get("/api/desktop/item-status-rule?projectId=1&taskId=5&applyAfterFinish=1", headers=h).json()
        post("item-status", {"itemId": 4, "statusId": rule["statusId"]})
        post("activities/start-unallocated", {"uuid": "flow-s2", "user_id": 3, "activity_id": 4})
        post("activities/complete", {"uuid": "flow-s2", "user_id": 3})  # clock-out
        assert [a["id"] for a in client.get("/api/desktop/assignments", headers=h).json()] == [2]
    assert query(fresh_db, "SELECT COUNT(*) AS n FROM prod_notes WHERE note = 'QC passed'") == [{"n": 1}]
    assert query(
        fresh_db,
        "SELECT uuid, is_finished, end_time IS NOT NULL AS closed FROM users_time_tracking "
        "WHERE uuid LIKE 'flow-%%' ORDER BY id",
    ) == [
        {"uuid": "flow-s1", "is_finished": 1, "closed": 1},
        {"uuid": "flow-t1", "is_finished": 1, "closed": 1},
        {"uuid": "flow-s2", "is_finished": 1, "closed": 1},
    ]
