"""The `/ws/desktop` route as the dev server composes it (routes() in a Starlette app, through the router and
the edge middleware) behaves like the gateway's direct path."""

from __future__ import annotations

import dataclasses

from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from ccsm_core import service
from ccsm_core.settings import Settings
from ccsm_gateway.app import hub, routes
from ccsm_gateway.hub import Hub
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


def test_with_auth_off_any_user_may_identify_and_a_revocation_follows_the_identified_user(settings: Settings) -> None:
    local = dataclasses.replace(settings, auth_required=False)
    app = service.build_app(local, routes(), [service.redis, hub])
    with TestClient(app) as client, client.websocket_connect("/ws/desktop") as ws:
        assert ws.receive_json()["type"] == "connected"
        ws.send_text('{"type":"identify","userId":"7"}')
        identified = ws.receive_json()
        the_hub: Hub = client.app_state["hub"]
        assert client.portal is not None
        closed = client.portal.call(_revoke, the_hub, 7)
        try:
            ws.receive_json()
            code = None
        except WebSocketDisconnect as exc:
            code = exc.code
    assert identified["ok"] is True
    assert identified["userId"] == 7
    assert closed == 1
    assert code == 4401


async def _revoke(the_hub: Hub, user_id: int) -> int:
    return the_hub.revoke(user_id)  # on the app's event loop, as a Redis revocation message would run
