"""Socket caps (issue 12 item 5): per user and per client address, answered at the upgrade with 429 (which the
desktop retries with back-off, unlike 4401/4403), counted until the connection ends, by the client address the
trusted proxies report; and no per-connection line reaches the log at info, and never a token (item 11)."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import InvalidStatus

from ccsm_core.settings import Settings
from ccsm_gateway.hub import Hub
from tests.gateway.test_outbox import FakeKeyspace
from tests.gateway.wsclient import WAIT_S, close_code, open_socket, opened, recv_type, token_for
from tests.harness import ServiceProcess, running

pytestmark = pytest.mark.slow


async def refusal(proc: ServiceProcess, token: str, **kwargs: object) -> tuple[int, str | None, dict[str, object]]:
    """The HTTP answer to an upgrade that must be refused: status, Retry-After, JSON body."""
    try:
        ws = await open_socket(proc, token, **kwargs)  # type: ignore[arg-type]
    except InvalidStatus as exc:
        response = exc.response
        return response.status_code, response.headers.get("Retry-After"), orjson.loads(response.body or b"{}")
    await ws.close()
    raise AssertionError("the upgrade was accepted")


async def reconnect(proc: ServiceProcess, token: str, **kwargs: object) -> ClientConnection:
    """Connect as the desktop does after a refusal: try again until accepted (bounded), here without its back-off."""
    deadline = time.monotonic() + WAIT_S
    while True:
        try:
            return await opened(proc, token, **kwargs)  # type: ignore[arg-type]
        except InvalidStatus:
            if time.monotonic() > deadline:
                raise


def test_a_users_sockets_beyond_the_cap_are_refused_with_429_and_a_closed_one_frees_its_place(
    settings: Settings,
) -> None:
    async def scenario() -> tuple[tuple[int, str | None, dict[str, object]], str, str]:
        token = token_for(settings, user_id=2)
        held = [await opened(gw, token) for _ in range(3)]
        over = await refusal(gw, token)
        async with await opened(gw, token_for(settings, user_id=3)) as other:  # another user is not affected
            await other.send('{"type":"ping"}')
            other_pong = (await recv_type(other, "pong"))["type"]
        await held.pop().close()
        async with await reconnect(gw, token) as again:  # the closed socket's place is free again
            await again.send('{"type":"ping"}')
            again_pong = (await recv_type(again, "pong"))["type"]
        for ws in held:
            await ws.close()
        return over, str(other_pong), str(again_pong)

    with running("ccsm_gateway", settings, {"WS_MAX_SOCKETS_PER_USER": "3"}) as gw:
        over, other_pong, again_pong = asyncio.run(scenario())
    assert over == (429, "30", {"error": "Too many connections"})
    assert other_pong == "pong"
    assert again_pong == "pong"


def test_an_address_beyond_its_cap_is_refused_while_other_addresses_connect(settings: Settings) -> None:
    async def scenario() -> tuple[int, int, str]:
        a = [await opened(gw, token_for(settings, user_id=u), local_addr=("127.0.0.1", 0)) for u in (1, 2)]
        over, _, _ = await refusal(gw, token_for(settings, user_id=3), local_addr=("127.0.0.1", 0))
        async with await opened(gw, token_for(settings, user_id=3), local_addr=("127.0.0.2", 0)) as elsewhere:
            await elsewhere.send('{"type":"ping"}')
            pong = str((await recv_type(elsewhere, "pong"))["type"])
        for ws in a:
            await ws.close()
        # Behind a trusted proxy (the ALB), the address is the one it forwards, not the proxy's own.
        via_proxy = [
            await opened(gw, token_for(settings, user_id=u), headers={"X-Forwarded-For": "203.0.113.7"}) for u in (1, 2)
        ]
        proxied, _, _ = await refusal(gw, token_for(settings, user_id=3), headers={"X-Forwarded-For": "203.0.113.7"})
        async with await opened(
            gw, token_for(settings, user_id=3), headers={"X-Forwarded-For": "198.51.100.9"}
        ) as other_office:
            await other_office.send('{"type":"ping"}')
            pong += (await recv_type(other_office, "pong"))["type"]
        for ws in via_proxy:
            await ws.close()
        return over, proxied, str(pong)

    env = {"WS_MAX_SOCKETS_PER_ADDRESS": "2", "TRUSTED_PROXIES": "127.0.0.1"}
    with running("ccsm_gateway", settings, env) as gw:
        over, proxied, pong = asyncio.run(scenario())
    assert over == 429
    assert proxied == 429
    assert pong == "pongpong"


def test_the_counts_follow_admissions_and_releases_and_forget_addresses_without_sockets() -> None:
    async def scenario() -> tuple[list[str | None], dict[int, int], dict[str, int]]:
        hub = Hub(Settings(ws_max_sockets_per_user=2, ws_max_sockets_per_address=3), FakeKeyspace())  # type: ignore[arg-type]
        answers = [hub.admit(7, "10.0.0.1"), hub.admit(7, "10.0.0.1"), hub.admit(7, "10.0.0.2")]
        answers += [hub.admit(8, "10.0.0.1"), hub.admit(9, "10.0.0.1")]
        hub.release(7, "10.0.0.1")
        answers.append(hub.admit(7, "10.0.0.1"))
        for user, address in ((7, "10.0.0.1"), (7, "10.0.0.1"), (8, "10.0.0.1")):
            hub.release(user, address)
        await hub.close()
        return answers, dict(hub.open_per_user), dict(hub.open_per_address)

    answers, per_user, per_address = asyncio.run(scenario())
    assert answers == [None, None, "user", None, "address", None]
    assert per_user == {}
    assert per_address == {}


def test_per_connection_events_are_not_logged_at_info_and_no_line_holds_a_token(settings: Settings) -> None:
    token = token_for(settings, user_id=2)
    expired = token_for(settings, user_id=2, ttl_s=1, now=time.time() - 10)

    async def scenario() -> None:
        for _ in range(3):
            with pytest.raises(InvalidStatus):
                await open_socket(gw, token, origin="https://evil.example.net")
            async with await opened(gw, token) as ws:
                await ws.send('{"type":"identify","userId":3}')
                assert (await close_code(ws))[0] == 4403
            async with await open_socket(gw, expired) as ws:
                assert (await close_code(ws))[0] == 4401
            async with await open_socket(gw, token, path=f"/ws/desktop?token={token}") as ws:
                await ws.send('{"type":"ping"}')
                await recv_type(ws, "pong")
        held = [await opened(gw, token) for _ in range(2)]
        assert (await refusal(gw, token))[0] == 429
        for ws in held:
            await ws.close()

    with running("ccsm_gateway", settings, {"LOG_LEVEL": "info", "WS_MAX_SOCKETS_PER_USER": "2"}) as gw:
        gw.wait_for_line("subscribed to db-changed")
        asyncio.run(scenario())
        gw.stop()
    lines = gw.lines
    assert not [line for line in lines if token in line or expired in line]
    per_connection = ("origin not allowed", "identify refused", "token expired", "[accepted]", "connection open")
    assert not [line for line in lines if any(text in line for text in per_connection)]
