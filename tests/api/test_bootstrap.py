"""`GET /api/desktop/bootstrap` (contract-work D2, I-14, I-16 / fix 13): the old payload, role filtering, and a
cache that is shared by concurrent requests, answers 304 on an unchanged ETag, and is never stale after a commit
(also across api processes)."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from typing import Any

import httpx
import orjson
import redis

from ccsm_api.bootstrap import BootstrapCache
from ccsm_core.db import Database
from ccsm_core.guard import Principal
from ccsm_core.keyspace import Keyspace
from ccsm_core.settings import Settings
from tests.api.test_read_cache import revalidated_until_a_write
from tests.api.work_support import api, auth, call, execute
from tests.harness import running

RECORDED = call("GET /api/desktop/bootstrap", 0)["response"]


def test_the_payload_has_the_recorded_keys_and_rows(fresh_db: Settings) -> None:
    with api(fresh_db) as client:
        r = client.get("/api/desktop/bootstrap", headers=auth(fresh_db, "admin"))
    assert r.status_code == 200
    body = r.json()
    assert list(body) == list(RECORDED)
    # Tables the recording's earlier probes did not touch are identical.
    for key in ("users", "projectRoles", "customers", "itemTypes", "cfsItems", "imItems", "projectUsers"):
        assert body[key] == RECORDED[key], key
    # Tables that grew during the recording (new project 4, its tasks and statuses) match on the seed rows.
    assert body["tasks"] == [t for t in RECORDED["tasks"] if t["id"] <= 38]
    assert body["taskDataDefinitions"] == [d for d in RECORDED["taskDataDefinitions"] if d["id"] <= 8]
    assert body["projectTasks"] == [t for t in RECORDED["projectTasks"] if t["project_id"] <= 3]
    assert body["projectTaskRoles"] == [t for t in RECORDED["projectTaskRoles"] if t["project_id"] <= 3]
    assert body["refItemStatus"] == [s for s in RECORDED["refItemStatus"] if s["id"] <= 9]
    seed_projects = [p for p in RECORDED["projects"] if p["id"] <= 3]
    assert body["projects"] == [{**p, "is_jira": 0} if p["id"] == 2 else p for p in seed_projects]
    assert body["projectTaskData"][:2] == [{k: v for k, v in row.items()} for row in RECORDED["projectTaskData"][:2]]
    assert r.headers["cache-control"] == "private, no-cache"
    assert r.headers["etag"].startswith('"')


def test_employees_get_only_their_own_user_row(fresh_db: Settings) -> None:
    with api(fresh_db) as client:
        employee = client.get("/api/desktop/bootstrap", headers=auth(fresh_db, "pnair_desktop")).json()
        admin = client.get("/api/desktop/bootstrap", headers=auth(fresh_db, "admin")).json()
        other = client.get("/api/desktop/bootstrap", headers=auth(fresh_db, "mreyes"))
    assert employee["users"] == [u for u in RECORDED["users"] if u["id"] == 3]
    assert [u["login"] for u in admin["users"]] == ["admin", "mreyes", "pnair", "pwcourt"]
    assert {k: v for k, v in employee.items() if k != "users"} == {k: v for k, v in admin.items() if k != "users"}
    assert [u["id"] for u in other.json()["users"]] == [2]
    # different bodies, different tags
    assert len({other.headers["etag"], client_etag(fresh_db, "pnair"), client_etag(fresh_db, "admin")}) == 3


def client_etag(settings: Settings, who: str) -> str:
    with api(settings) as client:
        return str(client.get("/api/desktop/bootstrap", headers=auth(settings, who)).headers["etag"])


def test_an_unchanged_etag_is_answered_with_304_until_a_write(fresh_db: Settings) -> None:
    admin = auth(fresh_db, "admin")
    with api(fresh_db) as client:
        after = revalidated_until_a_write(
            client,
            "/api/desktop/bootstrap",
            auth(fresh_db, "pnair"),
            lambda: client.put("/api/projects/2/jira", headers=admin, json={"isJira": 1}),
        )
    assert after.json()["projects"][1]["is_jira"] == 1


def test_a_fetch_after_any_committed_write_never_returns_the_old_payload(fresh_db: Settings) -> None:
    admin = auth(fresh_db, "admin")
    with api(fresh_db) as client:
        for round_ in range(12):
            flag = round_ % 2
            if round_ % 3 == 0:  # a write through another resource's endpoint
                r = client.put(
                    "/api/customers/2",
                    headers=admin,
                    json={
                        "name": f"Frederick County {round_}",
                        "state": "MD",
                        "county": "Frederick",
                        "contact_name": "Samuel Ortiz",
                        "contact_email": "sortiz@frederick.test",
                        "contact_phone": "301-555-0178",
                    },
                )
                assert r.status_code == 200, r.text
                names = [c["name"] for c in client.get("/api/desktop/bootstrap", headers=admin).json()["customers"]]
                assert f"Frederick County {round_}" in names
            assert client.put("/api/projects/1/jira", headers=admin, json={"isJira": flag}).status_code == 200
            body = client.get("/api/desktop/bootstrap", headers=admin).json()
            assert body["projects"][0]["is_jira"] == flag


def test_a_write_through_one_api_process_is_seen_by_the_next_fetch_from_another(fresh_db: Settings) -> None:
    admin = auth(fresh_db, "admin")
    with running("ccsm_api", fresh_db) as a, running("ccsm_api", fresh_db) as b, httpx.Client(timeout=10) as http:
        for flag in (1, 0, 1, 0, 1):
            assert http.get(f"{b.base_url}/api/desktop/bootstrap", headers=admin).status_code == 200  # warm B
            r = http.put(f"{a.base_url}/api/projects/3/jira", headers=admin, json={"isJira": flag})
            assert r.status_code == 200
            body = http.get(f"{b.base_url}/api/desktop/bootstrap", headers=admin).json()
            assert body["projects"][2]["is_jira"] == flag


def test_the_same_data_gives_the_same_etag_in_every_process(fresh_db: Settings) -> None:
    headers = auth(fresh_db, "pnair")
    with running("ccsm_api", fresh_db) as a, running("ccsm_api", fresh_db) as b, httpx.Client(timeout=10) as http:
        tag = http.get(f"{a.base_url}/api/desktop/bootstrap", headers=headers).headers["etag"]
        r = http.get(f"{b.base_url}/api/desktop/bootstrap", headers={**headers, "If-None-Match": tag})
    assert r.status_code == 304


async def _storm(settings: Settings, requests: int, keyspace: Keyspace | None = None) -> tuple[int, list[bytes]]:
    db = Database(settings)
    await db.open()
    ks = keyspace or Keyspace(settings)
    cache = BootstrapCache(db, ks)
    try:
        payloads = await asyncio.gather(*(cache.payload() for _ in range(requests)))
        bodies = [p.for_principal(Principal(3, 2, "pnair"))[0] for p in payloads]
        return cache.builds, bodies
    finally:
        await ks.close()
        await db.close()


def test_concurrent_identical_requests_share_one_database_pass(fresh_db: Settings) -> None:
    builds, bodies = asyncio.run(_storm(fresh_db, 200))
    assert builds == 1
    assert len(set(bodies)) == 1
    assert [u["id"] for u in orjson.loads(bodies[0])["users"]] == [3]


def test_without_redis_every_request_reads_the_database_instead_of_a_possibly_stale_copy(fresh_db: Settings) -> None:
    broken = Keyspace(dataclasses.replace(fresh_db, redis_url="redis://127.0.0.1:1/0"))
    builds, bodies = asyncio.run(_storm(fresh_db, 5, broken))
    assert builds == 5
    assert len(set(bodies)) == 1


def test_the_cached_payload_is_reused_until_the_data_version_moves(fresh_db: Settings) -> None:
    async def scenario() -> list[Any]:
        db = Database(fresh_db)
        await db.open()
        ks = Keyspace(fresh_db)
        cache = BootstrapCache(db, ks)
        db.on_commit(cache.on_commit)
        try:
            seen = []
            await cache.payload()
            await cache.payload()
            seen.append(cache.builds)
            async with db.transaction() as cur:
                await cur.execute("UPDATE customers SET name = 'Renamed' WHERE id = 1")
            await cache.payload()
            seen.append(cache.builds)
            await ks.client.incr(cache.version_key)  # another process committed
            payload = await cache.payload()
            seen.append(cache.builds)
            seen.append(orjson.loads(payload.admin_body)["customers"][1]["name"])
            return seen
        finally:
            await ks.close()
            await db.close()

    assert asyncio.run(scenario()) == [1, 2, 3, "Renamed"]


def test_a_desktop_storm_after_a_write_gets_the_new_payload_everywhere(fresh_db: Settings) -> None:
    """14 concurrent fetches from each of 10 desktops right after a write (real process, real sockets)."""
    headers = auth(fresh_db, "pnair")
    execute(fresh_db, "UPDATE ref_item_types SET name = 'Crate' WHERE id = 1")
    results: list[str] = []
    lock = threading.Lock()
    with running("ccsm_api", fresh_db) as proc:
        with httpx.Client(base_url=proc.base_url, timeout=20) as http:
            http.get("/api/desktop/bootstrap", headers=headers)
            assert (
                http.put("/api/projects/1/jira", headers=auth(fresh_db, "admin"), json={"isJira": 1}).status_code == 200
            )
        barrier = threading.Barrier(10)

        def desktop() -> None:
            with httpx.Client(base_url=proc.base_url, timeout=20) as http:
                barrier.wait(timeout=20)
                for _ in range(14):
                    body = http.get("/api/desktop/bootstrap", headers=headers).json()
                    with lock:
                        results.append(f"{body['projects'][0]['is_jira']}:{body['itemTypes'][1]['name']}")

        threads = [threading.Thread(target=desktop) for _ in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    assert results == ["1:Crate"] * 140


def test_a_write_response_arrives_only_after_the_shared_data_version_moved(fresh_db: Settings) -> None:
    client_redis = redis.Redis.from_url(fresh_db.redis_url)
    key = fresh_db.redis_prefix + "bootstrap:version"
    try:
        with api(fresh_db) as client:
            versions = []
            for flag in (1, 0, 1):
                before = int(client_redis.get(key) or 0)
                r = client.put("/api/projects/2/jira", headers=auth(fresh_db, "admin"), json={"isJira": flag})
                assert r.status_code == 200
                versions.append(int(client_redis.get(key) or 0) - before)
            # a read and a refused write do not move it
            before = int(client_redis.get(key) or 0)
            client.get("/api/projects", headers=auth(fresh_db, "admin"))
            client.put("/api/projects/999/jira", headers=auth(fresh_db, "admin"), json={"isJira": 1})
            unchanged = int(client_redis.get(key) or 0) - before
    finally:
        client_redis.close()
    assert versions == [1, 1, 1]
    assert unchanged == 0


def test_with_auth_off_the_desktop_gets_the_full_payload(fresh_db: Settings) -> None:
    with api(fresh_db, auth_required=False) as client:
        body = client.get("/api/desktop/bootstrap").json()
        r = client.get("/api/desktop/unfinished-tasks?userId=2")
    assert [u["id"] for u in body["users"]] == [1, 2, 3, 5]
    assert [row["id"] for row in r.json()] == [9]


def test_a_caller_that_goes_away_does_not_cancel_the_pass_the_others_share(fresh_db: Settings) -> None:
    async def scenario() -> tuple[int, int, bool]:
        db = Database(fresh_db)
        await db.open()
        ks = Keyspace(fresh_db)
        cache = BootstrapCache(db, ks)
        try:
            leader = asyncio.create_task(cache.payload())
            deadline = asyncio.get_running_loop().time() + 5
            while not cache._flights:  # the leader has started the shared pass
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.001)
            followers = [asyncio.create_task(cache.payload()) for _ in range(5)]
            await asyncio.sleep(0)
            leader.cancel()
            results = await asyncio.gather(*followers)
            return cache.builds, len({p.admin_etag for p in results}), leader.cancelled()
        finally:
            await ks.close()
            await db.close()

    assert asyncio.run(scenario()) == (1, 1, True)
