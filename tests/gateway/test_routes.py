"""The `/ws/desktop` route as the dev server composes it (routes() in a Starlette app, through the router and
the edge middleware) behaves like the gateway's direct path."""

from __future__ import annotations

from starlette.testclient import TestClient

from ccsm_core import service
from ccsm_core.settings import Settings
from ccsm_gateway.app import hub, routes
from tests.gateway.wsclient import token_for


def test_the_routed_endpoint_speaks_the_same_protocol(settings: Settings) -> None:
    app = service.build_app(settings, routes(), [service.redis, hub])
    headers = {"Authorization": f"Bearer {token_for(settings, user_id=2)}"}
    with TestClient(app) as client, client.websocket_connect("/ws/desktop", headers=headers) as ws:
        connected = ws.receive_json()
        ws.send_text('{"type":"identify","userId":2}')
        identified = ws.receive_json()
    assert connected["type"] == "connected"
    assert identified["type"] == "identified"
    assert identified["userId"] == 2
