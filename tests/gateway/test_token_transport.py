"""How a desktop authenticates `/ws/desktop`: the `Authorization` header of the upgrade, never the URL (README,
"Clients"). A token in the query string is not read, so the socket closes with 4401 like a missing token."""

from __future__ import annotations

import asyncio

import pytest

from ccsm_core.settings import Settings
from tests.gateway.wsclient import close_code, open_socket, recv_type, token_for
from tests.harness import ServiceProcess

pytestmark = pytest.mark.slow


def test_a_token_in_the_query_string_is_refused_with_4401(settings: Settings, gateway: ServiceProcess) -> None:
    async def scenario() -> tuple[int | None, str]:
        ws = await open_socket(gateway, path=f"/ws/desktop?token={token_for(settings)}")
        async with ws:
            return await close_code(ws)

    code, _reason = asyncio.run(scenario())
    assert code == 4401


def test_the_same_token_in_the_authorization_header_is_accepted(settings: Settings, gateway: ServiceProcess) -> None:
    async def scenario() -> dict[str, object]:
        async with await open_socket(gateway, token_for(settings)) as ws:
            return await recv_type(ws, "connected")

    assert asyncio.run(scenario())["type"] == "connected"
