"""Drill: Redis becomes unreachable and comes back (issue 8). Writes still succeed; login keeps working and
its rate limit falls back to per-process counters (fail open, documented in ccsm_auth.limits); the gateway
resubscribes and tells every client to `resync`; the api's pending db-changed goes out once Redis is back."""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import httpx
import pytest
from websockets.sync.client import ClientConnection, connect

from ccsm_core.settings import Settings
from ccsm_core.tokens import TokenService
from tests.faults import TcpProxy, proxy
from tests.harness import ADMIN, ServiceProcess

pytestmark = pytest.mark.slow


def next_frame(ws: ClientConnection, kind: str, timeout: float = 15.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        frame = json.loads(ws.recv(timeout=max(0.01, deadline - time.monotonic())))
        if frame.get("type") == kind:
            return frame  # type: ignore[no-any-return]


@pytest.fixture
def stack(settings: Settings) -> Iterator[tuple[TcpProxy, dict[str, ServiceProcess]]]:
    host, port = settings.redis_url.split("//", 1)[1].split("/")[0].split(":")
    with ExitStack() as es:
        redis_proxy = es.enter_context(proxy(host, int(port)))
        s = dataclasses.replace(settings, redis_url=f"redis://127.0.0.1:{redis_proxy.port}/0")
        procs = {}
        for name, module in (("api", "ccsm_api"), ("gateway", "ccsm_gateway"), ("auth", "ccsm_auth")):
            proc = ServiceProcess(module, s)
            es.callback(proc.stop)
            procs[name] = proc
        for proc in procs.values():
            proc.wait_started()
        yield redis_proxy, procs


def customer(tag: str) -> dict[str, str]:
    return {
        "name": f"Redis drill {tag}",
        "state": "NY",
        "county": "Kings",
        "contact_name": "R",
        "contact_email": "r@example.com",
        "contact_phone": "555",
    }


def test_redis_outage_keeps_writes_and_logins_working_and_ends_in_resync(
    settings: Settings, stack: tuple[TcpProxy, dict[str, ServiceProcess]]
) -> None:
    redis_proxy, procs = stack
    token = TokenService(settings.jwt_secret).issue(1, 1, "admin")
    admin = {"Authorization": f"Bearer {token}"}
    tag = uuid.uuid4().hex[:8]
    procs["gateway"].wait_for_line("subscribed to db-changed")
    with (
        httpx.Client(timeout=10) as client,
        connect(f"{procs['gateway'].ws_url}/ws/desktop", additional_headers=admin) as ws,
    ):
        assert next_frame(ws, "connected")["endpoint"] == "/ws/desktop"
        assert (
            client.post(f"{procs['api'].base_url}/api/customers", json=customer(tag + "-a"), headers=admin).status_code
            == 201
        )
        assert next_frame(ws, "db-changed")["reason"] == "transaction-commit"

        redis_proxy.down()
        procs["gateway"].wait_for_line("subscription lost; resubscribing")
        # Writes do not depend on Redis.
        write = client.post(f"{procs['api'].base_url}/api/customers", json=customer(tag + "-b"), headers=admin)
        assert write.status_code == 201
        procs["api"].wait_for_line("db-changed publish failed; will retry")
        # Login keeps working; the limiter falls back to per-process counters and still limits.
        login = client.post(f"{procs['auth'].base_url}/api/login", json=ADMIN)
        assert login.status_code == 200
        assert login.json()["accessToken"]
        statuses = [
            client.post(
                f"{procs['auth'].base_url}/api/login", json={"username": "mreyes", "password": "wrong"}
            ).status_code
            for _ in range(12)
        ]
        assert statuses[0] == 401
        assert 429 in statuses

        redis_proxy.up()
        procs["gateway"].wait_for_line("subscription re-established; clients told to resync")
        assert next_frame(ws, "db-changed")["reason"] == "resync"
        # Delivery is back to normal: a new write reaches the client (the outage's pending event may come first).
        assert (
            client.post(f"{procs['api'].base_url}/api/customers", json=customer(tag + "-c"), headers=admin).status_code
            == 201
        )
        assert next_frame(ws, "db-changed")["reason"] == "transaction-commit"

    for proc in procs.values():
        assert proc.proc.poll() is None
    assert redis_proxy.connections_accepted > 0
