"""Reads served from the data-version cache (`BootstrapCache.cached`): task categories and a project's items.
They are never stale after a commit, in this process or another one, and repeated reads cost no query."""

from __future__ import annotations

import asyncio

import httpx

from ccsm_api.bootstrap import BootstrapCache
from ccsm_core.db import Database
from ccsm_core.keyspace import Keyspace
from ccsm_core.settings import Settings
from tests.api.work_support import api, auth
from tests.harness import running


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
            created = http.post(f"{a.base_url}/api/items", json={"projectId": 2, "count": 1}, headers=admin)
            assert created.status_code == 201, round_
            after = http.get(f"{b.base_url}/api/items?projectId=2", headers=admin).json()
            assert len(after) == len(before) + 1, round_


async def _reads(settings: Settings, key: str, count: int) -> tuple[int, list[bytes]]:
    db = Database(settings)
    await db.open()
    keyspace = Keyspace(settings)
    cache = BootstrapCache(db, keyspace)
    builds = 0

    async def build() -> bytes:
        nonlocal builds
        builds += 1
        rows = await db.fetch_all("SELECT id, name FROM ref_task_category ORDER BY name")
        return repr(rows).encode()

    try:
        first = await asyncio.gather(*(cache.cached(key, build) for _ in range(count)))
        second = [await cache.cached(key, build) for _ in range(count)]
        cache.on_commit("transaction-commit")  # a commit in this process: the next read rebuilds
        third = await cache.cached(key, build)
        return builds, [*first, *second, third]
    finally:
        await keyspace.close()
        await db.close()


def test_concurrent_and_repeated_reads_share_one_build_until_a_commit(settings: Settings) -> None:
    builds, bodies = asyncio.run(_reads(settings, "task-categories-test", 50))
    assert builds == 2  # one for the 100 reads, one after the commit
    assert len(set(bodies)) == 1


def test_task_categories_answer_like_before(settings: Settings) -> None:
    with api(settings) as client:
        first = client.get("/api/lookups/task-categories", headers=auth(settings, "mreyes"))
        second = client.get("/api/lookups/task-categories", headers=auth(settings, "mreyes"))
    assert first.status_code == 200
    assert first.headers["content-type"] == "application/json"
    assert first.json() == second.json()
    assert first.json()[0].keys() == {"id", "name"}
