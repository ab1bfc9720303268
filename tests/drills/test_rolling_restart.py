"""Drill: a rolling restart under steady load (issue 8). Two api processes behind the native nginx edge take
~100 requests/s of mixed reads and writes; one gets SIGTERM and a replacement starts on its address. No client
request fails, and the stopped process exits 0."""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from ccsm_core.settings import Settings
from ccsm_core.tokens import TokenService
from tests.deploy.nginx_process import running_nginx
from tests.harness import ServiceProcess

pytestmark = pytest.mark.slow

RATE_PER_S = 100
TOTAL_REQUESTS = 900  # ~9 s of load
STOP_AT = 250  # request index at which the first api process gets SIGTERM


@pytest.fixture
def cluster(fresh_db: Settings, tmp_path: Path) -> Iterator[tuple[str, list[ServiceProcess], Settings]]:
    with ExitStack() as stack:
        procs = []
        for module in ("ccsm_api", "ccsm_api", "ccsm_auth", "ccsm_gateway"):
            proc = ServiceProcess(module, fresh_db)
            stack.callback(proc.stop)
            procs.append(proc)
        for proc in procs:
            proc.wait_started()
        api_a, api_b, auth, gateway = procs
        addresses = {
            "auth": f"127.0.0.1:{auth.port}",
            "ws-gateway": f"127.0.0.1:{gateway.port}",
            "api": [f"127.0.0.1:{api_a.port}", f"127.0.0.1:{api_b.port}"],
        }
        base = stack.enter_context(running_nginx(tmp_path, addresses))
        yield base, procs, fresh_db


def test_rolling_restart_under_load_loses_no_request(cluster: tuple[str, list[ServiceProcess], Settings]) -> None:
    base, procs, settings = cluster
    api_a = procs[0]
    token = TokenService(settings.jwt_secret).issue(1, 1, "admin")
    headers = {"Authorization": f"Bearer {token}"}
    tag = uuid.uuid4().hex[:8]

    async def drive() -> tuple[list[tuple[int, str]], int, ServiceProcess]:
        results: list[tuple[int, str]] = []
        replacement: list[ServiceProcess] = []
        stopped_code: list[int] = []

        async def one(client: httpx.AsyncClient, i: int) -> None:
            try:
                if i % 3 == 0:
                    body = {
                        "name": f"Roll {tag} {i}",
                        "state": "NY",
                        "county": "K",
                        "contact_name": "R",
                        "contact_email": "r@example.com",
                        "contact_phone": "1",
                    }
                    r = await client.post("/api/customers", json=body, headers=headers)
                elif i % 3 == 1:
                    r = await client.get("/api/customers", headers=headers)
                else:
                    r = await client.get("/api/lookups/task-categories", headers=headers)
                results.append((r.status_code, r.headers.get("x-upstream", "")))
            except httpx.HTTPError as exc:
                results.append((0, type(exc).__name__))

        async def restart() -> None:
            api_a.signal(signal.SIGTERM)
            stopped_code.append(await asyncio.to_thread(api_a.wait_exit, 30))
            new = ServiceProcess("ccsm_api", settings, port=api_a.port)  # the replacement task, same address
            replacement.append(await asyncio.to_thread(new.wait_started))

        limits = httpx.Limits(max_connections=64, max_keepalive_connections=32)
        async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as client:
            tasks = []
            control = None
            for i in range(TOTAL_REQUESTS):
                if i == STOP_AT:
                    control = asyncio.create_task(restart())
                tasks.append(asyncio.create_task(one(client, i)))
                await asyncio.sleep(1 / RATE_PER_S)  # the load's pacing, not synchronisation
            await asyncio.gather(*tasks)
            assert control is not None
            await control
        return results, stopped_code[0], replacement[0]

    results, stopped_code, replacement = asyncio.run(drive())
    try:
        statuses = Counter(status for status, _ in results)
        assert len(results) == TOTAL_REQUESTS
        assert statuses[0] == 0, statuses
        failed = [(s, u) for s, u in results if not 200 <= s < 300]
        assert failed == [], statuses
        assert stopped_code == 0
        upstreams = Counter(u for _, u in results)
        assert len([u for u in upstreams if u]) >= 2  # both api processes carried load
        assert replacement.proc.poll() is None
    finally:
        replacement.stop()
