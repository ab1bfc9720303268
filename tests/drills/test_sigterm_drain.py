"""Drill: SIGTERM while requests are in flight and desktops are connected (issue 8, runbook §8). The slow
requests complete, every WebSocket gets close code 1012 (reconnect elsewhere), and both processes exit 0
within SHUTDOWN_GRACE_MS."""

from __future__ import annotations

import dataclasses
import json
import signal
import threading
import time
from contextlib import ExitStack
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from ccsm_core.settings import Settings
from ccsm_core.tokens import TokenService
from tests.faults import proxy
from tests.harness import ServiceProcess, close_code

pytestmark = pytest.mark.slow

GRACE_MS = 5000


def test_sigterm_completes_slow_requests_and_closes_websockets_with_1012(settings: Settings) -> None:
    token = TokenService(settings.jwt_secret).issue(1, 1, "admin")
    headers = {"Authorization": f"Bearer {token}"}
    with proxy(settings.db_host, settings.db_port) as db:
        s = dataclasses.replace(
            settings,
            db_host="127.0.0.1",
            db_port=db.port,
            shutdown_grace_ms=GRACE_MS,
            shutdown_force_ms=GRACE_MS * 2,
            response_cache=False,  # the slow requests must reach the database, not the warm-up's cached answer
        )
        api = ServiceProcess("ccsm_api", s)
        gateway = ServiceProcess("ccsm_gateway", s)
        api.wait_started()
        gateway.wait_started()
        with httpx.Client(base_url=api.base_url, timeout=30) as client:
            assert client.get("/api/customers", headers=headers).status_code == 200  # warm the pool and guard

        stack = ExitStack()
        sockets = [
            stack.enter_context(connect(f"{gateway.ws_url}/ws/desktop", additional_headers=headers)) for _ in range(3)
        ]
        for ws in sockets:
            assert json.loads(ws.recv(timeout=10))["type"] == "connected"

        db.delay_s = 0.6  # every database round trip is now slow
        results: list[Any] = []

        def slow_request() -> None:
            with httpx.Client(base_url=api.base_url, timeout=30) as c:
                r = c.get("/api/customers", headers=headers)
                results.append((r.status_code, r.json()))

        sent_before = db.chunks_up
        threads = [threading.Thread(target=slow_request) for _ in range(4)]
        for t in threads:
            t.start()
        # The requests are inside the service once their queries are on the wire to the (slow) database.
        db.wait_for_chunks_up(sent_before + 4)
        started = time.monotonic()
        api.signal(signal.SIGTERM)
        gateway.signal(signal.SIGTERM)

        assert [close_code(ws) for ws in sockets] == [1012, 1012, 1012]
        stack.close()

        for t in threads:
            t.join(30)
        assert [status for status, _ in results] == [200, 200, 200, 200]
        assert all(isinstance(body, list) for _, body in results)

        assert api.wait_exit(GRACE_MS / 1000 + 5) == 0
        assert gateway.wait_exit(GRACE_MS / 1000 + 5) == 0
        assert time.monotonic() - started < GRACE_MS / 1000
