"""Drill: MySQL becomes unreachable and comes back (issue 8). The service keeps answering: /health 200,
/ready 503 within its bound, requests 503 JSON; when MySQL returns everything recovers without a restart and
no acknowledged write is lost."""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from ccsm_core.db import connect_sync
from ccsm_core.settings import Settings
from ccsm_core.tokens import TokenService
from tests.faults import TcpProxy, proxy
from tests.harness import ServiceProcess

pytestmark = pytest.mark.slow

READY_TIMEOUT_MS = 1000


@pytest.fixture
def db_proxy(settings: Settings) -> Iterator[TcpProxy]:
    with proxy(settings.db_host, settings.db_port) as p:
        yield p


@pytest.fixture
def api(settings: Settings, db_proxy: TcpProxy) -> Iterator[ServiceProcess]:
    s = dataclasses.replace(
        settings,
        db_host="127.0.0.1",
        db_port=db_proxy.port,
        ready_timeout_ms=READY_TIMEOUT_MS,
        db_connect_timeout_s=1.0,
        db_acquire_timeout_s=2.0,
    )
    proc = ServiceProcess("ccsm_api", s).wait_started()
    yield proc
    proc.stop()


def customer(tag: str) -> dict[str, str]:
    return {
        "name": f"Drill {tag}",
        "state": "NY",
        "county": "Kings",
        "contact_name": "Dee Rill",
        "contact_email": "dee@example.com",
        "contact_phone": "555-0100",
    }


def count_customers(settings: Settings, tag: str) -> int:
    conn = connect_sync(settings, settings.db_name)
    try:
        cur = conn.cursor()
        cur.execute("SELECT COUNT(*) FROM customers WHERE name = %s", (f"Drill {tag}",))
        return int(cur.fetchone()[0])
    finally:
        conn.close()


def test_mysql_outage_degrades_to_503_and_recovers_without_restart(
    settings: Settings, db_proxy: TcpProxy, api: ServiceProcess
) -> None:
    admin = {"Authorization": f"Bearer {TokenService(settings.jwt_secret).issue(1, 1, 'admin')}"}
    tag = uuid.uuid4().hex[:8]
    with httpx.Client(base_url=api.base_url, timeout=10) as client:
        assert client.get("/ready").status_code == 200
        before = client.post("/api/customers", json=customer(f"{tag}-before"), headers=admin)
        assert before.status_code == 201

        db_proxy.down()
        started = time.monotonic()
        ready = client.get("/ready")
        took = time.monotonic() - started
        assert ready.status_code == 503
        assert ready.json() == {"status": "not-ready", "reason": "db-unreachable"}
        assert took < READY_TIMEOUT_MS / 1000 + 1.0
        assert client.get("/health").status_code == 200
        during_read = client.get("/api/customers", headers=admin)
        assert during_read.status_code == 503
        assert during_read.json() == {"error": "Service unavailable"}
        during_write = client.post("/api/customers", json=customer(f"{tag}-during"), headers=admin)
        assert during_write.status_code == 503

        db_proxy.blackhole()  # a database that hangs instead of refusing: still bounded
        started = time.monotonic()
        assert client.get("/ready").status_code == 503
        assert time.monotonic() - started < READY_TIMEOUT_MS / 1000 + 1.0

        db_proxy.up()
        assert client.get("/ready").status_code == 200
        after = client.post("/api/customers", json=customer(f"{tag}-after"), headers=admin)
        assert after.status_code == 201
        listed = client.get("/api/customers", headers=admin)
        assert listed.status_code == 200

    assert api.proc.poll() is None  # never restarted
    # Every acknowledged write is there; the refused one was never acknowledged and is not half-written.
    assert count_customers(settings, f"{tag}-before") == 1
    assert count_customers(settings, f"{tag}-after") == 1
    assert count_customers(settings, f"{tag}-during") == 0
