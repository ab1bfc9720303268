"""The OpenAPI document (issue 8): valid OpenAPI 3.1, true to the old backend's recorded responses, served at
`GET /api/openapi.json`, and in step with the routing table."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest
from jsonschema import Draft202012Validator, FormatChecker
from openapi_spec_validator import validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError
from referencing import Registry
from referencing.jsonschema import DRAFT202012
from starlette.routing import Route
from starlette.testclient import TestClient

import devserver
from ccsm_api.app import create_app
from ccsm_api.openapi import DOCUMENT_BYTES
from ccsm_api.openapi_document import build
from ccsm_core.settings import Settings
from ccsm_core.tokens import TokenService

ROOT = Path(__file__).resolve().parents[2]
# The 147 recorded responses of the old backend (spec `examples.json`; the repository keeps a copy in fixtures/).
EXAMPLES = (ROOT / "fixtures" / "examples.json", Path("/work/shared/spec/examples.json"))
DOC_URI = "urn:ccsm:openapi"
METHODS = ("get", "put", "post", "delete", "patch", "options", "head")
# The transcript's callers (fixtures/seed.sql header): id, role, login; `pnair_desktop` is pnair's desktop token.
CALLERS = {
    "admin": (1, 1, "admin"),
    "mreyes": (2, 2, "mreyes"),
    "pnair": (3, 2, "pnair"),
    "pnair_desktop": (3, 2, "pnair"),
    "customer": (5, 3, "pwcourt"),
}


def document() -> dict[str, Any]:
    return build()


def examples() -> list[dict[str, Any]]:
    """Every recorded HTTP call, with the endpoint it belongs to (the WebSocket upgrades are not HTTP routes)."""
    source = next(p for p in EXAMPLES if p.exists())
    calls = []
    for endpoint in json.loads(source.read_text(encoding="utf-8")):
        if endpoint["group"] == "websocket":
            continue
        for call in endpoint["calls"]:
            calls.append({**call, "endpoint": endpoint["endpoint"]})
    return calls


def template_regex(path: str) -> re.Pattern[str]:
    return re.compile("^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(path)) + "$")


def operation_path(doc: dict[str, Any], url: str) -> str:
    """The document path that a concrete URL matches; fixed paths win over templated ones, as in OpenAPI."""
    path = urlsplit(url).path
    if path in doc["paths"]:
        return path
    matches = [p for p in doc["paths"] if template_regex(p).match(path)]
    assert len(matches) == 1, f"{url} matches {matches}"
    return matches[0]


def pointer(*parts: str) -> str:
    return "/".join(str(part).replace("~", "~0").replace("/", "~1") for part in parts)


def response_validator(doc: dict[str, Any], path: str, method: str, status: str) -> Draft202012Validator:
    """A validator for one documented response body; `$ref`s resolve inside the document."""
    registry: Registry[Any] = Registry().with_resource(DOC_URI, DRAFT202012.create_resource(doc))
    ref = f"{DOC_URI}#/" + pointer("paths", path, method, "responses", status, "content", "application/json", "schema")
    return Draft202012Validator({"$ref": ref}, registry=registry, format_checker=FormatChecker())


def documented_operations(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(m.upper(), p) for p, item in doc["paths"].items() if p.startswith("/api") for m in item if m in METHODS}


def routing_table_operations(settings: Settings) -> set[tuple[str, str]]:
    """Every (method, path) the dev server routes under /api, in OpenAPI's path syntax.

    Starlette adds HEAD to every GET route (not an operation of its own). A catch-all (a `{name:path}` parameter,
    e.g. the desktop facade's "authenticate, then 404") answers for paths that are not operations, so it is not one.
    """
    ops = set()
    for r in devserver.create_app(settings).routes:
        if not isinstance(r, Route) or not r.path.startswith("/api") or ":path}" in r.path:
            continue
        path = re.sub(r"\{(\w+)(:\w+)?\}", r"{\1}", r.path)
        for method in r.methods or ():
            if method == "HEAD" and "GET" in (r.methods or ()):
                continue
            ops.add((method, path))
    return ops


def test_the_document_is_valid_openapi_3_1() -> None:
    doc = document()
    assert doc["openapi"].startswith("3.1.")
    validate(doc)  # raises on any violation of the OpenAPI 3.1 schema


def test_the_validator_would_reject_a_broken_document() -> None:
    doc = document()
    doc["paths"]["/api/users/{id}"]["put"]["parameters"][0]["in"] = "body"  # OpenAPI 2 syntax, invalid in 3.x
    with pytest.raises(OpenAPIValidationError):
        validate(doc)


def test_every_api_route_of_the_contract_is_documented() -> None:
    ops = documented_operations(document())
    ops.discard(("GET", "/api/openapi.json"))
    assert len(ops) == 19 + 29


def test_every_example_response_matches_its_documented_schema() -> None:
    doc = document()
    checked = 0
    problems = []
    for call in examples():
        path = operation_path(doc, call["url"])
        method = call["method"].lower()
        status = str(call["status"])
        responses = doc["paths"][path][method]["responses"]
        if status not in responses:
            problems.append(f"{call['endpoint']}: status {status} is not documented")
            continue
        errors = list(response_validator(doc, path, method, status).iter_errors(call["response"]))
        problems.extend(f"{call['endpoint']} {status}: {e.json_path}: {e.message}" for e in errors)
        checked += 1
    assert problems == []
    assert checked == 143  # 147 recorded calls less the 4 WebSocket upgrades


def test_an_example_with_a_wrong_type_breaks_its_schema() -> None:
    doc = document()
    validator = response_validator(doc, "/api/items", "get", "200")
    good = {
        "id": 1,
        "code": "Civil-1.1-1-1",
        "label": None,
        "projectId": 1,
        "categoryId": None,
        "createdAt": "2025-04-04T08:00:00.000Z",
        "updatedAt": None,
        "statusLabel": None,
    }
    assert validator.is_valid([good])
    assert not validator.is_valid([{**good, "id": "1"}])  # ids are numbers
    assert not validator.is_valid([{**good, "createdAt": "yesterday"}])  # datetimes are ISO strings
    assert not validator.is_valid([{k: v for k, v in good.items() if k != "code"}])


def test_every_error_status_has_the_error_body_schema() -> None:
    doc = document()
    for path, item in doc["paths"].items():
        if not path.startswith("/api/") or path == "/api/openapi.json":
            continue
        for method, operation in item.items():
            statuses = set(operation["responses"])
            assert {"400", "413", "500", "503"} <= statuses, (method, path)
            for status, response in operation["responses"].items():
                if int(status) >= 400:
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Error"}, (method, path, status)


def test_only_the_two_login_routes_are_public_and_every_other_api_route_may_be_limited() -> None:
    doc = document()
    operations = {(m, p): o for p, item in doc["paths"].items() for m, o in item.items() if p.startswith("/api/")}
    public = {key for key, o in operations.items() if o.get("security") == []}
    limited = {key for key, o in operations.items() if "429" in o["responses"]}
    logins = {("post", "/api/login"), ("post", "/api/desktop/login-authcode")}
    assert public == logins | {("get", "/api/openapi.json")}
    # the logins by their attempt budgets, every protected route by its user's share of the pool (issue 12 item 9)
    assert limited == set(operations) - {("get", "/api/openapi.json")}
    assert all("Retry-After" in operations[key]["responses"]["429"].get("headers", {}) for key in limited)
    assert doc["security"] == [{"bearerAuth": []}]
    assert doc["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"


def test_guarded_routes_document_401_and_role_guarded_routes_403() -> None:
    doc = document()
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            if operation.get("security") == [] or not path.startswith("/api/"):
                assert "403" not in operation["responses"], (method, path)
                continue
            assert "401" in operation["responses"], (method, path)
            if not path.startswith("/api/lookups/"):
                assert "403" in operation["responses"], (method, path)


def test_the_api_service_serves_the_document_without_a_token(settings: Settings) -> None:
    with TestClient(create_app(settings)) as client:
        response = client.get("/api/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.content == DOCUMENT_BYTES
    assert orjson.loads(response.content) == document()


def test_the_routing_table_and_the_document_list_the_same_operations(settings: Settings) -> None:
    documented = documented_operations(document())
    routed = routing_table_operations(settings)
    assert sorted(routed - documented) == [], "routed but not documented"
    assert sorted(documented - routed) == [], "documented but not routed"


def test_the_new_backend_answers_the_whole_transcript_within_the_document(fresh_db: Settings) -> None:
    """Replays the old backend's 143 recorded HTTP calls, in order, against every service's routes on a fresh
    seed: whatever each call answers now must be a documented status with a body that fits its schema."""
    doc = document()
    settings = dataclasses.replace(fresh_db, bcrypt_rounds=8)
    tokens = TokenService(settings.jwt_secret, expires_seconds=3600)
    problems = []
    replayed = 0
    with TestClient(devserver.create_app(settings)) as client:
        for call in examples():
            headers = {}
            if call["who"] in CALLERS:
                headers["Authorization"] = f"Bearer {tokens.issue(*CALLERS[call['who']])}"
            r = client.request(call["method"], call["url"], headers=headers, json=call["body"])
            path, method, status = operation_path(doc, call["url"]), call["method"].lower(), str(r.status_code)
            replayed += 1
            if status not in doc["paths"][path][method]["responses"]:
                problems.append(f"{call['endpoint']} ({call['note']}): status {status} is not documented")
                continue
            errors = response_validator(doc, path, method, status).iter_errors(r.json())
            problems.extend(f"{call['endpoint']} {status}: {e.json_path}: {e.message}" for e in errors)
    assert problems == []
    assert replayed == 143
