"""The compose edge proxy works: Debian's nginx runs natively with the committed edge/conf.d/routes.conf, pointed at
the three services started as real processes, and every request lands on the service the URL table names (in any
case where that service matches in any case); what nginx answers itself is the error table's JSON.

Which process answered is read from `X-Upstream` (nginx's `$upstream_addr`, added by the test's http block), and
each upstream's own /health names its service, so a swapped port or a wrong rule fails here whatever the
services' routes look like today.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect
from websockets.sync.server import ServerConnection, serve

from ccsm_core.edge import HELMET_HEADERS
from ccsm_core.errors import MESSAGES
from ccsm_core.routing import API, AUTH, GATEWAY, RULES, service_for
from ccsm_core.settings import Settings
from deploy.topology import deployments
from tests.deploy.nginx_process import running_nginx
from tests.harness import ServiceProcess, free_port
from tests.raw_http import RawResponse, exchange

pytestmark = pytest.mark.slow

# Paths on both sides of every rule: exact, trailing slash, case, prefixes that must not match, the default.
PATHS = sorted(
    {p.replace("*", "users/7") for rule in RULES for p in rule.patterns}
    | {"/health", "/ready", "/", "/API/login", "/api/login/extra", "/apix", "/ws/desktop/", "/ws", "/api/users"}
    | {"/API/LOGIN", "/Api/Desktop/Login-Authcode", "/API/USERS", "/WS/DESKTOP", "/HEALTH"}
)


class Backend:
    def __init__(self, processes: dict[str, ServiceProcess], edge: str) -> None:
        self.processes = processes
        self.edge = edge

    def address(self, service: str) -> str:
        return f"127.0.0.1:{self.processes[service].port}"


@pytest.fixture(scope="module")
def backend(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    processes: dict[str, ServiceProcess] = {}
    try:
        for svc in deployments():
            processes[svc.name] = ServiceProcess(svc.module, settings)
        for proc in processes.values():
            proc.wait_started()
        addresses = {name: f"127.0.0.1:{proc.port}" for name, proc in processes.items()}
        with running_nginx(tmp_path_factory.mktemp("edge"), addresses) as edge:
            yield Backend(processes, edge)
    finally:
        for proc in processes.values():
            proc.stop()


def test_each_upstream_is_the_service_it_claims_to_be(backend: Backend) -> None:
    for name, proc in backend.processes.items():
        response = httpx.get(f"{proc.base_url}/health")
        assert response.status_code == 200
        assert response.json()["service"] == name


@pytest.mark.parametrize("path", PATHS)
def test_the_edge_sends_each_path_to_the_service_the_url_table_names(backend: Backend, path: str) -> None:
    response = httpx.get(backend.edge + path)
    owner = service_for(path, case_sensitive=False)  # as the services match it (the ALB: case-sensitive)
    assert response.headers.get("x-upstream") == backend.address(owner), (path, response.status_code)
    assert response.status_code not in (502, 503, 504)


def test_an_upper_case_login_at_the_edge_is_the_auth_services_login(backend: Backend) -> None:
    body = {"username": "admin", "password": "not-the-password"}
    upper = httpx.post(f"{backend.edge}/API/LOGIN", json=body)
    lower = httpx.post(f"{backend.edge}/api/login", json=body)
    assert upper.headers["x-upstream"] == lower.headers["x-upstream"] == backend.address(AUTH)
    assert (
        (upper.status_code, upper.json())
        == (lower.status_code, lower.json())
        == (
            401,
            {"error": "Invalid username or password"},
        )
    )


@pytest.mark.parametrize(
    ("method", "path", "status", "body"),
    [
        ("POST", "/API/LOGIN", 404, {"error": "Not found"}),
        ("POST", "/API/DESKTOP/LOGIN-AUTHCODE", 401, {"error": "Missing bearer token"}),  # auth before routing
        ("GET", "/WS/DESKTOP", 404, {"error": "Not found"}),
    ],
)
def test_on_aws_an_upper_case_path_reaches_the_api_service_which_answers_json(
    backend: Backend, method: str, path: str, status: int, body: dict[str, str]
) -> None:
    """The ALB matches case-sensitively: these reach the default target group (README, "Security")."""
    assert service_for(path) == API
    response = httpx.request(method, backend.processes[API].base_url + path, json={"code": "555"})
    assert (response.status_code, response.json()) == (status, body)


def test_health_at_the_edge_is_answered_by_the_default_service(backend: Backend) -> None:
    response = httpx.get(f"{backend.edge}/health")
    assert response.status_code == 200
    assert response.json()["service"] == API
    assert response.headers["x-upstream"] == backend.address(API)


def test_login_at_the_edge_reaches_the_auth_service_with_its_body(backend: Backend) -> None:
    response = httpx.post(f"{backend.edge}/api/login", json={}, headers={"X-Request-ID": "edge-login-1"})
    assert response.headers["x-upstream"] == backend.address(AUTH)
    assert response.headers["x-request-id"] == "edge-login-1"  # the service's middleware answered, not nginx
    assert response.headers["content-type"].startswith("application/json")
    assert "error" in response.json()


def test_an_api_route_at_the_edge_reaches_the_api_service(backend: Backend) -> None:
    response = httpx.get(f"{backend.edge}/api/users", headers={"X-Request-ID": "edge-api-1"})
    assert response.headers["x-upstream"] == backend.address(API)
    assert response.headers["x-request-id"] == "edge-api-1"
    assert response.status_code in (401, 404)  # no token (or, before the route exists, unknown): the api's JSON
    assert "error" in response.json()


def read_head(sock: socket.socket) -> tuple[int, dict[str, str]]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    headers = {}
    for line in head[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(head[0].split()[1]), headers


def test_a_websocket_upgrade_at_the_edge_reaches_the_gateway(backend: Backend) -> None:
    host, port = backend.edge.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            b"GET /ws/desktop HTTP/1.1\r\nHost: edge.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        status, headers = read_head(sock)
    assert headers.get("x-upstream") == backend.address(GATEWAY)
    # 101 once the gateway accepts (an unauthenticated socket is accepted, then closed with 4401), 403 before
    # its route exists; never nginx's 502 and never a plain-HTTP answer from another service.
    assert status in (101, 403)


@pytest.fixture
def echo_gateway() -> Iterator[tuple[str, list[dict[str, str]]]]:
    """A WebSocket echo server standing in for the gateway, recording each handshake's path and headers."""
    seen: list[dict[str, str]] = []

    def handler(ws: ServerConnection) -> None:
        assert ws.request is not None
        seen.append({"path": ws.request.path, **{k.lower(): v for k, v in ws.request.headers.raw_items()}})
        for message in ws:
            ws.send(message)

    port = free_port()
    with serve(handler, "127.0.0.1", port) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"127.0.0.1:{port}", seen
        finally:
            server.shutdown()
            thread.join(10)


def test_websocket_frames_pass_both_ways_through_the_edge_unrewritten(
    echo_gateway: tuple[str, list[dict[str, str]]], tmp_path: Path
) -> None:
    address, seen = echo_gateway
    unused = f"127.0.0.1:{free_port()}"
    addresses = {svc.name: (address if svc.name == GATEWAY else unused) for svc in deployments()}
    with running_nginx(tmp_path, addresses) as edge:
        url = edge.replace("http://", "ws://") + "/ws/desktop?client=test"
        with connect(url, open_timeout=10, additional_headers={"X-Forwarded-For": "203.0.113.9"}) as ws:
            ws.send('{"type":"ping"}')
            assert ws.recv(timeout=10) == '{"type":"ping"}'
    assert len(seen) == 1
    assert seen[0]["path"] == "/ws/desktop?client=test"  # nothing rewrites a path
    assert seen[0]["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"  # appended, like the ALB
    assert seen[0]["x-forwarded-proto"] == "http"


# --- what nginx answers itself ------------------------------------------------------------------------------


def assert_edge_error(response: RawResponse, status: int) -> None:
    assert response.status == status, response.raw[:300]
    assert response.header("content-type") == "application/json"
    assert response.json() == {"error": MESSAGES[status]}
    for name, value in HELMET_HEADERS:
        assert response.header(name.decode()) == value.decode(), name
    # server_tokens off: no version. The header itself stays (README, "Security").
    assert response.header("server") == "nginx"
    assert b"nginx/" not in response.raw
    assert b"<html" not in response.raw


def edge_address(edge: str) -> tuple[str, int]:
    host, port = edge.removeprefix("http://").split(":")
    return host, int(port)


HOST = b"Host: edge.test\r\n"
NGINX_ERRORS = [
    pytest.param(b"GARBAGE\r\n\r\n", 400, id="malformed request line"),
    pytest.param(b"GET /health HTTP/1.1\r\n" + HOST + b"Host: other.test\r\n\r\n", 400, id="duplicate Host"),
    pytest.param(b"TRACE /health HTTP/1.1\r\n" + HOST + b"\r\n", 405, id="TRACE"),
    pytest.param(b"POST /api/login HTTP/1.1\r\n" + HOST + b"Content-Length: 20000000\r\n\r\n", 413, id="body"),
    pytest.param(b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n" + HOST + b"\r\n", 414, id="URI too long"),
    pytest.param(b"GET /health HTTP/1.1\r\n" + HOST + b"X-Big: " + b"a" * 9000 + b"\r\n\r\n", 431, id="header"),
    pytest.param(b"POST /api/login HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: gzip\r\n\r\n", 501, id="coding"),
    pytest.param(b"GET /health HTTP/3.0\r\n" + HOST + b"\r\n", 505, id="HTTP/3.0"),
    pytest.param(b"GET /__edge_error HTTP/1.1\r\n" + HOST + b"\r\n", 404, id="the internal error location"),
]


@pytest.mark.parametrize(("request_bytes", "status"), NGINX_ERRORS)
def test_nginx_answers_its_own_errors_as_json_with_the_security_headers(
    backend: Backend, request_bytes: bytes, status: int
) -> None:
    assert_edge_error(exchange(edge_address(backend.edge), request_bytes), status)


def test_an_unreachable_upstream_is_a_json_502(tmp_path: Path) -> None:
    addresses = {svc.name: f"127.0.0.1:{free_port()}" for svc in deployments()}  # nothing listens there
    with running_nginx(tmp_path, addresses) as edge:
        response = exchange(edge_address(edge), b"GET /api/users HTTP/1.1\r\n" + HOST + b"\r\n")
    assert_edge_error(response, 502)


@pytest.fixture
def silent_upstream() -> Iterator[str]:
    """A listening socket that never answers: the kernel completes connections, nobody reads them."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"127.0.0.1:{sock.getsockname()[1]}"


def test_an_upstream_that_does_not_answer_in_time_is_a_json_504(silent_upstream: str, tmp_path: Path) -> None:
    addresses: dict[str, Any] = {svc.name: silent_upstream for svc in deployments()}
    with running_nginx(tmp_path, addresses, replace={"proxy_read_timeout 60s;": "proxy_read_timeout 1s;"}) as edge:
        response = exchange(edge_address(edge), b"GET /api/users HTTP/1.1\r\n" + HOST + b"\r\n")
    assert_edge_error(response, 504)
