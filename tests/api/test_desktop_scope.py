"""Issue 12 item 1, least privilege: a token from `POST /api/desktop/login-authcode` works only where the desktop
app works (`/api/desktop/*`, `/ws/desktop`) and gets 403 `{"error":"Forbidden"}` everywhere else; the web login's
tokens, and the old backend's, are unchanged."""

from __future__ import annotations

import asyncio
import dataclasses
import re
from typing import Any

import pytest
from starlette.routing import Route
from starlette.testclient import TestClient

from ccsm_api.app import routes
from ccsm_core.settings import Settings
from tests.api.test_desktop_flow import everything
from tests.core.test_tokens import VECTOR_SECRET, VECTORS
from tests.gateway.wsclient import opened, recv_type
from tests.harness import ADMIN, running

FORBIDDEN = {"error": "Forbidden"}


def code_token(client: TestClient, code: str) -> dict[str, str]:
    r = client.post("/api/desktop/login-authcode", json={"code": code})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['accessToken']}"}


def outside_the_desktop() -> list[tuple[str, str]]:
    """Every guarded api route outside /api/desktop, with its path parameters filled in."""
    out = []
    for r in routes():
        assert isinstance(r, Route)
        if r.path.startswith("/api/desktop") or r.path == "/api/openapi.json":
            continue
        for method in sorted((r.methods or set()) - {"HEAD"}):
            out.append((method, re.sub(r"\{[^}]+\}", "1", r.path)))
    return out


def test_an_admins_code_token_is_forbidden_on_the_users_list_and_works_on_the_bootstrap(settings: Settings) -> None:
    with everything(settings) as client:
        desktop = code_token(client, "555")  # admin's code: the worst case
        users = client.get("/api/users", headers=desktop)
        bootstrap = client.get("/api/desktop/bootstrap", headers=desktop)
        odd_spelling = client.get("/API/Users/", headers=desktop)
        web = client.post("/api/login", json=ADMIN).json()["accessToken"]
        with_web = client.get("/api/users", headers={"Authorization": f"Bearer {web}"})
    assert (users.status_code, users.json()) == (403, FORBIDDEN)
    assert (odd_spelling.status_code, odd_spelling.json()) == (403, FORBIDDEN)
    assert bootstrap.status_code == 200
    assert "users" in bootstrap.json()
    assert with_web.status_code == 200
    assert "authcode" in with_web.json()[0]  # the web token is unchanged


@pytest.mark.parametrize(("method", "path"), outside_the_desktop())
def test_a_code_token_is_forbidden_on_every_route_outside_the_desktop_facade(
    settings: Settings, method: str, path: str
) -> None:
    with everything(settings) as client:
        r = client.request(method, path, headers=code_token(client, "777"), json={})
    assert (r.status_code, r.json()) == (403, FORBIDDEN)


def test_the_desktop_flow_works_with_a_code_token_on_every_desktop_read(settings: Settings) -> None:
    with everything(settings) as client:
        h = code_token(client, "888")
        answers = {
            path: client.get(path, headers=h).status_code
            for path in (
                "/api/desktop/bootstrap",
                "/api/desktop/unfinished-tasks?userId=3",
                "/api/desktop/assignments?userId=3",
                "/api/desktop/available-tasks?userId=3&projectId=1",
                "/api/desktop/item-tracking-tasks?projectId=1",
            )
        }
        unknown = client.get("/api/desktop/no-such-thing", headers=h)
    assert set(answers.values()) == {200}, answers
    assert unknown.status_code == 404  # authenticated, then routed: the facade's own 404


def test_the_old_backends_tokens_still_work_everywhere_they_did(settings: Settings) -> None:
    with everything(dataclasses.replace(settings, jwt_secret=VECTOR_SECRET)) as client:
        h = {"Authorization": f"Bearer {VECTORS['admin_valid_until_2126']}"}
        users = client.get("/api/users", headers=h)
        bootstrap = client.get("/api/desktop/bootstrap", headers=h)
    assert (users.status_code, bootstrap.status_code) == (200, 200)


@pytest.mark.slow
def test_a_code_token_opens_the_desktop_websocket(settings: Settings) -> None:
    with everything(settings) as client:
        token = code_token(client, "777")["Authorization"].split()[1]

    async def scenario(proc: Any) -> dict[str, Any]:
        async with await opened(proc, token) as ws:
            await ws.send('{"type":"ping"}')
            return await recv_type(ws, "pong")

    with running("ccsm_gateway", settings, extra_env={"LOG_LEVEL": "info"}) as gateway:
        gateway.wait_for_line("subscribed to db-changed")
        pong = asyncio.run(scenario(gateway))
    assert pong["type"] == "pong"
