"""What the projects / time-tracking / desktop / bootstrap tests share: the recorded transcript, tokens for the
seed users, an in-process client, database probes and a real api process for concurrency."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from starlette.testclient import TestClient

from ccsm_api.app import create_app
from ccsm_core.settings import Settings
from tests.api.transcript import EXAMPLES as EXAMPLES
from tests.api.transcript import SEED_USERS as SEED_USERS
from tests.api.transcript import auth as auth
from tests.api.transcript import call as call
from tests.api.transcript import execute as execute
from tests.api.transcript import query as query
from tests.api.transcript import replay as replay
from tests.api.transcript import token as token

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


@contextmanager
def api(settings: Settings, **overrides: Any) -> Iterator[TestClient]:
    with TestClient(create_app(dataclasses.replace(settings, service="api", **overrides))) as client:
        yield client


def send(client: TestClient, settings: Settings, endpoint: str, index: int) -> Any:
    """Send a recorded request; return the response (for calls whose body depends on earlier state)."""
    rec = call(endpoint, index)
    return client.request(rec["method"], rec["url"], headers=auth(settings, rec["who"]), json=rec["body"])


def snapshot(settings: Settings) -> dict[str, list[dict[str, Any]]]:
    """Every row of every work table, in id order."""
    return {t: query(settings, f"SELECT * FROM `{t}` ORDER BY id") for t in TABLES}  # noqa: S608
