"""The dev server (`make run`) serves every service's routes in the URL table's order, enters every
service's lifespan, and agrees with the table about which service owns each path."""

from __future__ import annotations

import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator

import orjson
import pytest
from starlette.routing import BaseRoute, Route, WebSocketRoute

import devserver
from ccsm_core import routing
from ccsm_core.settings import Settings
from tests.harness import ROOT, free_port, settings_env

MODULE_SERVICE = {"ccsm_auth": routing.AUTH, "ccsm_gateway": routing.GATEWAY, "ccsm_api": routing.API}


def owner(r: BaseRoute) -> str | None:
    endpoint = getattr(r, "endpoint", None)
    module = getattr(endpoint, "__module__", "") or ""
    return MODULE_SERVICE.get(module.split(".")[0])


def sample_path(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "1", path)


def app_routes(settings: Settings) -> list[BaseRoute]:
    return list(devserver.create_app(settings).routes)


def test_every_service_route_is_owned_by_that_service_in_the_url_table(settings: Settings) -> None:
    checked = 0
    for r in app_routes(settings):
        service = owner(r)
        if service is None or not isinstance(r, Route | WebSocketRoute):
            continue
        assert routing.service_for(sample_path(r.path)) == service, r.path
        checked += 1
    specs = devserver.specs(settings)
    assert checked == sum(len(s.routes) for s in specs.values())


def test_routes_are_concatenated_in_the_url_tables_priority_order(settings: Settings) -> None:
    order = [rule.service for rule in routing.RULES]
    owners = [o for o in (owner(r) for r in app_routes(settings)) if o is not None]
    positions = [order.index(o) for o in owners]
    assert positions == sorted(positions)


def test_health_and_ready_come_last_as_the_default_service(settings: Settings) -> None:
    paths = [getattr(r, "path", None) for r in app_routes(settings)]
    assert paths[-2:] == ["/health", "/ready"]
    assert routing.service_for("/health") == routing.DEFAULT_SERVICE


@pytest.mark.parametrize(
    ("path", "service"),
    [
        ("/api/login", "auth"),
        ("/api/desktop/login-authcode", "auth"),
        ("/ws/desktop", "ws-gateway"),
        ("/api", "api"),
        ("/api/users", "api"),
        ("/api/desktop/bootstrap", "api"),
        ("/health", "api"),
        ("/desktop/bootstrap", "api"),
        ("/api/loginx", "api"),
    ],
)
def test_the_url_table_routes_like_the_alb(path: str, service: str) -> None:
    assert routing.service_for(path) == service


@pytest.fixture
def devserver_process(settings: Settings) -> Iterator[tuple[subprocess.Popen[str], int]]:
    port = free_port()
    env = {
        "PATH": "/usr/bin:/bin",
        **settings_env(settings),
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "LOG_LEVEL": "info",
        "PYTHONUNBUFFERED": "1",
    }
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "devserver.py")],
        cwd=str(ROOT / "tests"),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield proc, port
    finally:
        proc.terminate()
        proc.wait(30)
        assert proc.stdout is not None
        proc.stdout.close()


def test_make_run_serves_health_and_ready_and_prints_where_it_listens(
    devserver_process: tuple[subprocess.Popen[str], int],
) -> None:
    proc, port = devserver_process
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if "WebSocket started on endpoint" in line:  # the last start-up line, logged once the socket is bound
            break
    text = "".join(seen)
    assert f"listening on http://127.0.0.1:{port}" in text
    assert "API HTTP server running on port" in text
    assert "WebSocket started on endpoint: ws://" in text
    assert "Connected DB: " in text
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
        assert orjson.loads(r.read())["status"] == "ok"
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=5) as r:
        assert orjson.loads(r.read()) == {"status": "ready"}
