"""The shared HTTP edge: one error table, helmet headers, exact CORS, body limit, request ids."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Iterator

import orjson
import pymysql
import pytest
from starlette.requests import Request
from starlette.responses import Response
from starlette.testclient import TestClient
from starlette.types import Message

from ccsm_core import service
from ccsm_core.codec import json_response, read_object
from ccsm_core.edge import HELMET_HEADERS, ErrorResponses, TrustedProxies
from ccsm_core.errors import ApiError
from ccsm_core.settings import Settings
from tests.harness import make_settings

PORTAL = "https://portal.example.com"


async def echo(request: Request) -> Response:
    return json_response({"body": await read_object(request)})


async def boom(request: Request) -> Response:
    raise RuntimeError("secret internals /srv/app.py line 42")


async def db_down(request: Request) -> Response:
    raise pymysql.err.OperationalError(2003, "Can't connect to MySQL server on 'db.internal' (111)")


async def teapot(request: Request) -> Response:
    raise ApiError(418, "I'm a teapot")


async def ok(request: Request) -> Response:
    return json_response({"ok": True})


def app_for(settings: Settings) -> TestClient:
    routes = [
        service.route("/api/echo", echo, ["POST"]),
        service.route("/api/boom", boom),
        service.route("/api/db-down", db_down),
        service.route("/api/teapot", teapot),
        service.route("/api/items/{id}", ok),
        *service.ops_routes(),
    ]
    return TestClient(service.build_app(settings, routes, []), raise_server_exceptions=False)


@pytest.fixture
def client() -> Iterator[TestClient]:
    with app_for(make_settings(use_helmet=True, cors_origins=(PORTAL,))) as c:
        yield c


@pytest.fixture
def plain_client() -> Iterator[TestClient]:
    with app_for(make_settings(use_helmet=False)) as c:
        yield c


def test_unknown_path_is_404_json(client: TestClient) -> None:
    r = client.get("/api/nothing-here")
    assert r.status_code == 404
    assert r.json() == {"error": "Not found"}
    assert r.headers["content-type"] == "application/json"


def test_wrong_method_is_405_json(client: TestClient) -> None:
    r = client.delete("/api/echo")
    assert r.status_code == 405
    assert r.json() == {"error": "Method not allowed"}


@pytest.mark.parametrize("body", [b"{not json", b'{"a": NaN}', b'"just a string"', b"\xff\xfe{}", b"[" * 5000])
def test_malformed_json_is_400_json(client: TestClient, body: bytes) -> None:
    r = client.post("/api/echo", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert "error" in r.json()
    assert "Traceback" not in r.text


def test_a_json_array_body_where_an_object_is_expected_is_400(client: TestClient) -> None:
    r = client.post("/api/echo", json=[1, 2])
    assert r.status_code == 400
    assert r.json() == {"error": "Request body must be a JSON object"}


def test_a_body_without_json_content_type_reads_as_empty(client: TestClient) -> None:
    r = client.post("/api/echo", content=b"username=a", headers={"content-type": "text/plain"})
    assert r.status_code == 200
    assert r.json() == {"body": {}}


def test_body_over_the_limit_is_413_json(client: TestClient) -> None:
    r = client.post(
        "/api/echo", content=b'{"a":"' + b"x" * (101 * 1024) + b'"}', headers={"content-type": "application/json"}
    )
    assert r.status_code == 413
    assert r.json() == {"error": "Request body too large"}


def test_a_chunked_body_over_the_limit_is_413_json(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"a":"'
        for _ in range(30):
            yield b"x" * 4096
        yield b'"}'

    r = client.post("/api/echo", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert r.json() == {"error": "Request body too large"}


def test_a_body_just_under_the_limit_is_accepted(client: TestClient) -> None:
    payload = b'{"a":"' + b"x" * (100 * 1024 - 16) + b'"}'
    r = client.post("/api/echo", content=payload, headers={"content-type": "application/json"})
    assert r.status_code == 200


def test_unexpected_exception_is_500_without_internals_and_logged_with_request_id(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="ccsm.edge"):
        r = client.get("/api/boom", headers={"x-request-id": "req-boom-1"})
    assert r.status_code == 500
    assert r.json() == {"error": "Internal server error"}
    assert "secret internals" not in r.text
    assert r.headers["x-request-id"] == "req-boom-1"
    records = [rec for rec in caplog.records if rec.name == "ccsm.edge"]
    assert records
    assert records[0].exc_info is not None


def test_database_unavailable_is_503_service_unavailable(client: TestClient) -> None:
    r = client.get("/api/db-down")
    assert r.status_code == 503
    assert r.json() == {"error": "Service unavailable"}
    assert "db.internal" not in r.text


def test_api_error_keeps_its_status_and_message(client: TestClient) -> None:
    r = client.get("/api/teapot")
    assert r.status_code == 418
    assert r.json() == {"error": "I'm a teapot"}


def test_helmet_headers_on_success_and_on_errors(client: TestClient) -> None:
    for r in (
        client.get("/health"),
        client.get("/api/nothing"),
        client.get("/api/boom"),
        client.post("/api/echo", content=b"{", headers={"content-type": "application/json"}),
    ):
        for name, value in HELMET_HEADERS:
            assert r.headers.get(name.decode()) == value.decode(), (r.status_code, name)
        assert "server" not in r.headers
        assert "x-powered-by" not in r.headers


def test_no_helmet_headers_when_use_helmet_is_off(plain_client: TestClient) -> None:
    r = plain_client.get("/health")
    assert "content-security-policy" not in r.headers
    assert "x-frame-options" not in r.headers


def test_allowed_origin_gets_exactly_its_origin_back(client: TestClient) -> None:
    r = client.get("/health", headers={"origin": PORTAL})
    assert r.headers["access-control-allow-origin"] == PORTAL
    assert "Origin" in r.headers["vary"]
    assert "access-control-allow-credentials" not in r.headers


@pytest.mark.parametrize("origin", ["https://evil.example.com", "null", "https://portal.example.com.evil.io"])
def test_other_origins_are_never_reflected(client: TestClient, origin: str) -> None:
    r = client.get("/health", headers={"origin": origin})
    assert r.status_code == 200
    assert "access-control-allow-origin" not in r.headers
    assert "Origin" in r.headers["vary"]


def test_preflight_from_an_allowed_origin_is_answered_before_any_auth(client: TestClient) -> None:
    r = client.options(
        "/api/items/1",
        headers={
            "origin": PORTAL,
            "access-control-request-method": "PUT",
            "access-control-request-headers": "content-type,authorization",
        },
    )
    assert r.status_code == 204
    assert r.headers["access-control-allow-origin"] == PORTAL
    assert r.headers["access-control-allow-methods"] == "GET,HEAD,PUT,PATCH,POST,DELETE"
    assert r.headers["access-control-allow-headers"] == "content-type,authorization"


@pytest.mark.parametrize("origin", ["https://evil.example.com", "null"])
def test_preflight_from_a_denied_origin_is_refused(client: TestClient, origin: str) -> None:
    r = client.options("/api/echo", headers={"origin": origin, "access-control-request-method": "POST"})
    assert r.status_code == 403
    assert r.json() == {"error": "Origin not allowed"}
    assert "access-control-allow-origin" not in r.headers


def test_request_id_is_accepted_or_generated(client: TestClient) -> None:
    assert client.get("/health", headers={"x-request-id": "abc-123"}).headers["x-request-id"] == "abc-123"
    generated = client.get("/health", headers={"x-request-id": "bad id with spaces"}).headers["x-request-id"]
    assert len(generated) == 32
    assert generated != client.get("/health").headers["x-request-id"]


def test_paths_match_case_insensitively_and_with_a_trailing_slash(client: TestClient) -> None:
    assert client.get("/API/Items/7").status_code == 200
    r = client.get("/api/items/7/", follow_redirects=False)
    assert r.status_code == 200


def test_access_log_line_carries_method_path_status_latency_and_request_id(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="ccsm.access"):
        client.get("/api/nothing", headers={"x-request-id": "log-me"})
    rec = next(r for r in caplog.records if r.name == "ccsm.access")
    assert rec.__dict__["method"] == "GET"
    assert rec.__dict__["path"] == "/api/nothing"
    assert rec.__dict__["status"] == 404
    assert rec.__dict__["durationMs"] >= 0


def test_forwarded_for_is_used_only_from_trusted_proxies() -> None:
    proxies = TrustedProxies(["10.0.0.0/8"])
    via_proxy = {"client": ("10.0.1.5", 1234), "headers": [(b"x-forwarded-for", b"203.0.113.9, 10.0.2.2")]}
    direct = {"client": ("198.51.100.7", 1234), "headers": [(b"x-forwarded-for", b"1.2.3.4")]}
    assert proxies.client_ip(via_proxy) == "203.0.113.9"
    assert proxies.client_ip(direct) == "198.51.100.7"
    assert TrustedProxies([]).client_ip(via_proxy) == "10.0.1.5"


def test_settings_replace_keeps_validation() -> None:
    with pytest.raises(ValueError, match="CORS_ORIGINS"):
        dataclasses.replace(make_settings(), cors_origins=("*",))


def test_a_client_that_disconnects_mid_body_is_an_info_event_and_status_499(caplog: pytest.LogCaptureFixture) -> None:
    app = service.build_app(make_settings(), [service.route("/api/echo", echo, ["POST"])], [])
    messages = [
        {"type": "http.request", "body": b'{"a": ', "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[Message] = []

    async def receive() -> Message:
        return messages.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/api/echo",
        "raw_path": b"/api/echo",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"100")],
        "client": ("127.0.0.1", 5000),
    }
    with caplog.at_level(logging.INFO):
        asyncio.run(app(scope, receive, send))
    assert sent == []  # nobody to answer
    records = [r for r in caplog.records if r.name in ("ccsm.edge", "ccsm.access")]
    assert [(r.name, r.levelname, r.getMessage()) for r in records] == [
        ("ccsm.edge", "INFO", "client disconnected before the request body arrived"),
        ("ccsm.access", "INFO", "request"),
    ]
    assert records[1].__dict__["status"] == 499
    assert not any(r.exc_info for r in caplog.records)


def test_errors_answered_outside_the_app_have_the_apps_shape() -> None:
    raw = ErrorResponses(make_settings(use_helmet=True)).http(431, leading=[(b"date", b"today")])
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    assert lines[0] == "HTTP/1.1 431 Request Header Fields Too Large"
    assert orjson.loads(body) == {"error": "Request header fields too large"}
    assert headers["content-type"] == "application/json"
    assert headers["content-length"] == str(len(body))
    assert headers["connection"] == "close"
    assert headers["date"] == "today"
    assert len(headers["x-request-id"]) == 32
    for name, value in HELMET_HEADERS:
        assert headers[name.decode()] == value.decode()
    assert "content-security-policy" not in ErrorResponses(make_settings()).http(400).decode()
