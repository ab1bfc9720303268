"""/health and /ready: liveness always, readiness only when the real dependencies answer."""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from ccsm_api.app import create_app as api_app
from ccsm_auth.app import create_app as auth_app
from ccsm_core.settings import Settings
from ccsm_gateway.app import create_app as gateway_app


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port with nothing listening on it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


def test_health_reports_service_and_uptime(settings: Settings) -> None:
    with TestClient(api_app(dataclasses.replace(settings, service="api"))) as client:
        r = client.get("/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok"
    assert body["service"] == "api"
    assert body["shuttingDown"] is False
    assert isinstance(body["uptimeSec"], int)
    assert body["startedAt"].endswith("Z")
    assert len(body["startedAt"]) == len("2026-02-02T08:00:00.000Z")


@pytest.mark.parametrize("factory", [api_app, auth_app, gateway_app])
def test_ready_when_dependencies_answer(settings: Settings, factory) -> None:
    with TestClient(factory(settings)) as client:
        r = client.get("/ready")
    assert r.status_code == 200
    assert r.json() == {"status": "ready"}


@pytest.mark.parametrize("factory", [api_app, auth_app])
def test_ready_is_503_without_mysql_and_hides_the_driver_message(settings: Settings, closed_port: int, factory) -> None:
    broken = dataclasses.replace(settings, db_port=closed_port, db_connect_timeout_s=0.5)
    with TestClient(factory(broken)) as client:
        r = client.get("/ready")
        health = client.get("/health")
    assert r.status_code == 503
    assert r.json() == {"status": "not-ready", "reason": "db-unreachable"}
    assert health.status_code == 200


@pytest.mark.parametrize("factory", [auth_app, gateway_app])
def test_ready_is_503_without_redis(settings: Settings, closed_port: int, factory) -> None:
    broken = dataclasses.replace(settings, redis_url=f"redis://127.0.0.1:{closed_port}/0")
    with TestClient(factory(broken)) as client:
        r = client.get("/ready")
    assert r.status_code == 503
    assert r.json() == {"status": "not-ready", "reason": "redis-unreachable"}


def test_api_readiness_does_not_depend_on_redis(settings: Settings, closed_port: int) -> None:
    broken = dataclasses.replace(settings, redis_url=f"redis://127.0.0.1:{closed_port}/0")
    with TestClient(api_app(broken)) as client:
        assert client.get("/ready").status_code == 200
