"""What the projects / time-tracking / desktop / bootstrap tests share: the recorded transcript, tokens for the
seed users, an in-process client, database probes and a real api process for concurrency."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
from starlette.testclient import TestClient

from ccsm_api.app import create_app
from ccsm_core.db import connect_sync
from ccsm_core.settings import Settings
from ccsm_core.tokens import TokenService
from tests.harness import ROOT

EXAMPLES: list[dict[str, Any]] = orjson.loads((ROOT / "fixtures" / "examples.json").read_bytes())

# Seed users (fixtures/seed.sql header): id, role, login. `pnair_desktop` is pnair's desktop (authcode) token.
SEED_USERS = {
    "admin": (1, 1, "admin"),
    "mreyes": (2, 2, "mreyes"),
    "pnair": (3, 2, "pnair"),
    "pnair_desktop": (3, 2, "pnair"),
    "tbecker": (4, 2, "tbecker"),
    "customer": (5, 3, "pwcourt"),
}

# Every table the work endpoints write, for before/after comparisons.
TABLES = (
    "projects",
    "project_users",
    "project_task_roles",
    "project_tasks",
    "project_task_data",
    "tasks",
    "ref_item_status",
    "itemstatus_task",
    "items",
    "cfs_items",
    "im_items",
    "users_time_tracking",
    "users_time_tracking_data",
    "prod_notes",
    "assigments",
)


def call(endpoint: str, index: int) -> dict[str, Any]:
    """One recorded call of the old backend, e.g. `call("GET /api/projects", 0)`."""
    for entry in EXAMPLES:
        if entry["endpoint"] == endpoint:
            recorded: dict[str, Any] = entry["calls"][index]
            return recorded
    raise KeyError(endpoint)


def token(settings: Settings, who: str) -> str:
    user_id, role, login = SEED_USERS[who]
    return TokenService(settings.jwt_secret).issue(user_id, role, login)


def auth(settings: Settings, who: str | None) -> dict[str, str]:
    if who is None or who == "(no token)":
        return {}
    return {"Authorization": f"Bearer {token(settings, who)}"}


@contextmanager
def api(settings: Settings, **overrides: Any) -> Iterator[TestClient]:
    with TestClient(create_app(dataclasses.replace(settings, service="api", **overrides))) as client:
        yield client


def replay(client: TestClient, settings: Settings, endpoint: str, index: int) -> Any:
    """Send a recorded request and assert the status and body are the recorded ones."""
    rec = call(endpoint, index)
    r = client.request(rec["method"], rec["url"], headers=auth(settings, rec["who"]), json=rec["body"])
    assert (r.status_code, r.json()) == (rec["status"], rec["response"]), rec["note"]
    return r.json()


def send(client: TestClient, settings: Settings, endpoint: str, index: int) -> Any:
    """Send a recorded request; return the response (for calls whose body depends on earlier state)."""
    rec = call(endpoint, index)
    return client.request(rec["method"], rec["url"], headers=auth(settings, rec["who"]), json=rec["body"])


def query(settings: Settings, sql: str, args: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    conn = connect_sync(settings, settings.db_name)
    try:
        cur = conn.cursor()
        cur.execute(sql, args)
        names = [d[0] for d in cur.description or ()]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
    finally:
        conn.close()


def execute(settings: Settings, sql: str, args: tuple[Any, ...] = ()) -> None:
    conn = connect_sync(settings, settings.db_name)
    try:
        conn.cursor().execute(sql, args)
    finally:
        conn.close()


def snapshot(settings: Settings) -> dict[str, list[dict[str, Any]]]:
    """Every row of every work table, in id order."""
    return {t: query(settings, f"SELECT * FROM `{t}` ORDER BY id") for t in TABLES}  # noqa: S608
