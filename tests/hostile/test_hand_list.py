"""The hand-picked hostile inputs of issue 8, against the running service set: huge and deeply nested bodies,
non-UTF-8 bytes, JSON type confusion on every documented body field, 10 kB passwords, huge and negative ids,
SQL metacharacters, and broken JWTs. Nothing answers 500, nothing crashes, the stack stays ready."""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from ccsm_core.settings import Settings
from ccsm_core.tokens import TokenService
from tests.harness import ServiceProcess

pytestmark = pytest.mark.slow

CONFUSING_VALUES: list[Any] = [
    {},
    [],
    [1, 2],
    {"$gt": ""},
    1e308,
    -1,
    0,
    2**63,
    1.5,
    True,
    None,
    "",
    "x" * 10_000,
    "' OR 1=1 --",
    "1; DROP TABLE users; --",
    "\u0000",
    "\U0001d518\U0001d52b",  # astral-plane characters (4-byte UTF-8)
    "9999-12-31T23:30:00-01:00",  # instants whose UTC time leaves the calendar (issue 12 item 8)
    "0001-01-01T00:30:00+01:00",
]

# Instants and dates at and beyond both ends of the calendar and of MySQL's DATETIME range (issue 12 item 8).
EXTREME_INSTANTS: list[Any] = [
    "9999-12-31T23:30:00-01:00",
    "0001-01-01T00:30:00+01:00",
    "9999-12-31T23:59:59.999+00:00",
    "1000-01-01T00:00:00+00:01",
    "0001-01-01",
    "9999-12-31",
    "10000-01-01T00:00:00Z",
    8.64e15,
    -8.64e15,
    253402300800000,  # 10000-01-01T00:00:00Z in epoch milliseconds
]
# The instants above that lie outside 1000-01-01 .. 9999-12-31 23:59:59 UTC: a timestamp field refuses them.
OUT_OF_RANGE = {0, 1, 3, 4, 6, 7, 8, 9}


@pytest.fixture(scope="module")
def client(stack: ServiceProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.base_url, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def document(client: httpx.Client) -> dict[str, Any]:
    return client.get("/api/openapi.json").json()  # type: ignore[no-any-return]


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    found = []
    for path, item in document["paths"].items():
        for method, op in item.items():
            if method in ("get", "post", "put", "delete", "patch"):
                found.append((method.upper(), path, op))
    return found


def concrete(path: str, value: str = "1") -> str:
    return re.sub(r"\{[^}]+\}", value, path)


def body_fields(op: dict[str, Any], document: dict[str, Any]) -> list[str]:
    schema = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = document["components"]["schemas"][name]
    return sorted(schema.get("properties", {}))


def assert_no_500(responses: list[tuple[str, httpx.Response]]) -> None:
    bad = [
        (what, r.status_code, r.text[:200]) for what, r in responses if r.status_code >= 500 and r.status_code != 502
    ]
    assert bad == []
    for what, r in responses:
        assert r.headers.get("content-type", "").startswith("application/json"), what
        assert r.status_code < 400 or "error" in r.json(), what


def test_type_confusion_on_every_documented_body_field_is_a_clean_4xx(
    client: httpx.Client, document: dict[str, Any], admin_headers: dict[str, str]
) -> None:
    responses = []
    for method, path, op in operations(document):
        fields = body_fields(op, document)
        for field in fields:
            for value in CONFUSING_VALUES:
                r = client.request(method, concrete(path), json={field: value}, headers=admin_headers)
                responses.append((f"{method} {path} {field}={str(value)[:20]!r}", r))
    assert len(responses) > 500
    assert_no_500(responses)


def instant_fields(document: dict[str, Any]) -> set[tuple[str, str, str]]:
    """(method, path, field) of every documented query parameter or body field that is an instant or a date."""

    def is_instant(schema: dict[str, Any]) -> bool:
        options = schema.get("anyOf", [schema])
        return any(a.get("format") == "date-time" or a.get("pattern", "").startswith("^[0-9]{4}-") for a in options)

    found = set()
    for method, path, op in operations(document):
        for param in op.get("parameters", []):
            if param["in"] == "query" and is_instant(param["schema"]):
                found.add((method, path, "?" + param["name"]))
        schema = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
        for name, prop in schema.get("properties", {}).items():
            if is_instant(prop):
                found.add((method, path, name))
    return found


# What reaches the check of each instant field, everything else in it valid: a path and its query or body.
INSTANT_BASES: dict[tuple[str, str, str], tuple[str, dict[str, Any]]] = {
    **{
        ("GET", path, "?" + name): (path, {"userId": 3, **({} if name == "date" else {other: "2026-02-02"})})
        for path in ("/api/time-tracking", "/api/time-tracking/metrics")
        for name, other in (("date", ""), ("dateFrom", "dateTo"), ("dateTo", "dateFrom"))
    },
    ("POST", "/api/time-tracking", "date"): (
        "/api/time-tracking",
        {"userId": 3, "activityId": 1, "startTime": "09:00", "endTime": "09:30"},
    ),
    **{
        ("PUT", "/api/time-tracking/{id}", name): (
            "/api/time-tracking/1",
            {"startDate": "2026-02-02", "endDate": "2026-02-02", "startTime": "08:00", "endTime": "08:15"},
        )
        for name in ("startDate", "start_date", "endDate", "end_date")
    },
    ("POST", "/api/desktop/activities/start-unallocated", "timestamp"): (
        "/api/desktop/activities/start-unallocated",
        {"uuid": "edge-of-time-1", "userId": 3},
    ),
    ("POST", "/api/desktop/activities/start-task", "timestamp"): (
        "/api/desktop/activities/start-task",
        {"uuid": "edge-of-time-2", "userId": 3, "projectId": 1, "taskId": 1},
    ),
    ("POST", "/api/desktop/activities/complete", "timestamp"): (
        "/api/desktop/activities/complete",
        {"uuid": "6f1c2a10-0000-4000-8000-000000000006", "userId": 3},
    ),
}
TIMESTAMPS = {key for key in INSTANT_BASES if key[2] == "timestamp"}


def test_extreme_instants_on_every_instant_and_date_field_are_4xx_or_stored(
    client: httpx.Client, document: dict[str, Any], admin_headers: dict[str, str]
) -> None:
    fields = instant_fields(document)
    assert fields == set(INSTANT_BASES), "an instant or date field without a base request here escapes this test"
    responses = []
    for method, path, field in sorted(fields):
        url, base = INSTANT_BASES[(method, path, field)]
        for index, value in enumerate(EXTREME_INSTANTS):
            if field.startswith("?"):
                r = client.get(url, params={**base, field[1:]: value}, headers=admin_headers)
            else:
                r = client.request(method, url, json={**base, field: value}, headers=admin_headers)
            responses.append((f"{method} {url} {field}={value!r}", r))
            if (method, path, field) in TIMESTAMPS and index in OUT_OF_RANGE:
                assert (r.status_code, r.json()) == (400, {"error": "Invalid timestamp"}), (path, value)
    assert_no_500(responses)


def test_extreme_instants_as_task_data_values_are_4xx_or_stored(
    client: httpx.Client, admin_headers: dict[str, str]
) -> None:
    """The values whose type a definition or `valueType` decides: D4, D17's taskData and P4/P5's taskData."""
    r = client.post(
        "/api/lookups/task-data-definitions",
        json={"label": "Edge of time", "valueType": "datetime"},
        headers=admin_headers,
    )
    assert r.status_code in (200, 201)
    datetime_def = r.json()["id"]
    responses = []
    for index, value in enumerate(EXTREME_INSTANTS):
        for kind, def_id in (("datetime", datetime_def), ("date", 7)):
            item = {"dataDefId": def_id, "valueType": kind, "value": value}
            segment = f"edge-of-time-{kind}-{index}"  # an open segment, so its completion writes the taskData
            r = client.post(
                "/api/desktop/activities/start-unallocated", json={"uuid": segment, "userId": 3}, headers=admin_headers
            )
            assert r.status_code == 200
            tasks = [{"taskId": 1, "rolesId": [5], "taskData": [item]}]
            for method, path, body in [
                ("POST", "/api/desktop/task-data", {"projectId": 1, "taskId": 1, **item}),
                ("POST", "/api/desktop/activities/complete", {"uuid": segment, "userId": 3, "taskData": [item]}),
                ("POST", "/api/projects", {"project": {"name": "Edge of time"}, "tasks": tasks}),
                ("PUT", "/api/projects/3", {"project": {"name": "Edge of time"}, "tasks": tasks}),
            ]:
                r = client.request(method, path, json=body, headers=admin_headers)
                responses.append((f"{method} {path} {kind}={value!r}", r))
    assert_no_500(responses)
    assert {r.status_code for _, r in responses} <= {200, 201, 400}


def test_arrays_nested_a_thousand_deep_in_every_documented_body_field_are_never_500(
    client: httpx.Client, document: dict[str, Any], admin_headers: dict[str, str]
) -> None:
    # orjson accepts 1,024 levels; converting such a value like JavaScript's String()/Number() used to recurse
    # past Python's limit (RecursionError: a 500), and orjson refuses to encode more than 254 (json task data).
    headers = {**admin_headers, "content-type": "application/json"}
    responses = []
    for method, path, op in operations(document):
        for field in body_fields(op, document):
            for depth, leaf in ((1000, b'"1"'), (300, b"{}")):
                raw = b'{"%s":' % field.encode() + b"[" * depth + leaf + b"]" * depth + b"}"
                r = client.request(method, concrete(path), content=raw, headers=headers)
                responses.append((f"{method} {path} {field} nested {depth}", r))
    assert len(responses) > 100
    assert_no_500(responses)


@pytest.mark.parametrize(
    "raw",
    [
        b"{" * 1,
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 5_000 + b"1" + b"}" * 5_000,
        b"\xff\xfe\xfa\x00garbage",
        b'{"username": "\xc3\x28", "password": "x"}',
    ],
)
def test_malformed_bodies_are_400_everywhere(
    client: httpx.Client, document: dict[str, Any], admin_headers: dict[str, str], raw: bytes
) -> None:
    responses = []
    for method, path, _ in operations(document):
        if method in ("POST", "PUT"):
            r = client.request(
                method, concrete(path), content=raw, headers={**admin_headers, "content-type": "application/json"}
            )
            responses.append((f"{method} {path}", r))
    assert_no_500(responses)
    assert {r.status_code for _, r in responses} <= {400, 413, 429}


def test_one_mebibyte_bodies_are_413(client: httpx.Client, admin_headers: dict[str, str]) -> None:
    big = b'{"name":"' + b"x" * (1024 * 1024) + b'"}'
    for path in ("/api/login", "/api/customers", "/api/desktop/activities/complete"):
        r = client.post(path, content=big, headers={**admin_headers, "content-type": "application/json"})
        assert r.status_code == 413, path
        assert r.json() == {"error": "Request body too large"}


def test_ten_kilobyte_passwords_are_refused_cleanly(client: httpx.Client) -> None:
    r = client.post("/api/login", json={"username": "admin", "password": "p" * 10_000})
    assert r.status_code in (400, 401, 429)
    assert "error" in r.json()


@pytest.mark.parametrize(
    "ident", ["99999999999999999999999", "-1", "0", "1.5", "1e400", "0x10", "NaN", "%27%20OR%201=1"]
)
def test_huge_negative_and_odd_ids_never_500(
    client: httpx.Client, document: dict[str, Any], admin_headers: dict[str, str], ident: str
) -> None:
    responses = []
    for method, path, _ in operations(document):
        if "{" in path:
            responses.append(
                (f"{method} {path}", client.request(method, concrete(path, ident), json={}, headers=admin_headers))
            )
        if method == "GET":
            for name in ("projectId", "userId", "taskId", "id", "uuid"):
                responses.append(
                    (f"GET {path}?{name}", client.get(concrete(path), params={name: ident}, headers=admin_headers))
                )
    assert_no_500(responses)


def b64(obj: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def broken_tokens(settings: Settings) -> list[str]:
    now = int(time.time())
    claims = {"sub": 1, "role": 1, "login": "admin", "iat": now, "exp": now + 3600}
    return [
        "garbage",
        "a.b.c",
        f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}.",
        f"{b64({'alg': 'HS512', 'typ': 'JWT'})}.{b64(claims)}.{'A' * 86}",
        TokenService(settings.jwt_secret, expires_seconds=1).issue(1, 1, "admin", now=now - 100),
        TokenService("another-secret-that-is-long-enough-000").issue(1, 1, "admin"),
        "x" * 100_000,
    ]


def test_broken_jwts_are_401_on_every_protected_route(
    client: httpx.Client, document: dict[str, Any], hostile_settings: Settings
) -> None:
    protected = [(m, p) for m, p, op in operations(document) if op.get("security", document.get("security"))]
    assert len(protected) > 30
    for token in broken_tokens(hostile_settings):
        for method, path in protected[:: max(1, len(protected) // 12)]:
            r = client.request(method, concrete(path), json={}, headers={"Authorization": f"Bearer {token}"})
            assert r.status_code in (401, 431), (method, path, r.status_code)
            if r.status_code == 401:
                assert r.json()["error"] in ("Invalid or expired token", "Invalid token", "Missing bearer token")


def test_the_stack_is_still_ready_after_all_of_it(client: httpx.Client, stack: ServiceProcess) -> None:
    assert client.get("/ready").json() == {"status": "ready"}
    assert stack.proc.poll() is None
