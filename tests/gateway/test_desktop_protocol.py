"""`WS /ws/desktop` as the desktop speaks it (contract-core §8.7) with the spec's fixes (README fix 6)."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest
from websockets.exceptions import InvalidStatus

from ccsm_core.settings import Settings
from tests.gateway.wsclient import (
    DB_CHANGED,
    REVOCATIONS,
    close_code,
    open_socket,
    opened,
    publish,
    recv_json,
    recv_type,
    token_for,
)
from tests.harness import ServiceProcess

pytestmark = pytest.mark.slow


def test_the_first_frame_is_connected_with_the_endpoint_and_a_timestamp(
    settings: Settings, gateway: ServiceProcess
) -> None:
    async def scenario() -> bytes:
        async with await open_socket(gateway, token_for(settings)) as ws:
            raw = await asyncio.wait_for(ws.recv(), 5)
            assert isinstance(raw, str)
            return raw.encode()

    before = int(time.time() * 1000)
    raw = asyncio.run(scenario())
    msg = orjson.loads(raw)
    assert list(msg) == ["type", "endpoint", "ts"]
    assert msg["type"] == "connected"
    assert msg["endpoint"] == "/ws/desktop"
    assert before <= msg["ts"] <= int(time.time() * 1000)


def test_ping_is_answered_with_pong_and_subscribe_with_subscribed(settings: Settings, gateway: ServiceProcess) -> None:
    async def scenario() -> tuple[dict[str, object], dict[str, object]]:
        async with await opened(gateway, token_for(settings)) as ws:
            await ws.send('{"type":"ping"}')
            pong = await recv_type(ws, "pong")
            await ws.send('{"type":"subscribe"}')
            subscribed = await recv_type(ws, "subscribed")
            return pong, subscribed

    pong, subscribed = asyncio.run(scenario())
    assert list(pong) == ["type", "ts"]
    assert isinstance(pong["ts"], int)
    assert list(subscribed) == ["type", "ok", "ts"]
    assert subscribed["ok"] is True


def test_identify_with_the_tokens_user_as_a_numeric_string_is_identified_with_a_number(
    settings: Settings, gateway: ServiceProcess
) -> None:
    async def scenario() -> dict[str, object]:
        async with await opened(gateway, token_for(settings, user_id=2)) as ws:
            await ws.send('{"type":"identify","userId":"2"}')
            return await recv_type(ws, "identified")

    msg = asyncio.run(scenario())
    assert list(msg) == ["type", "ok", "userId", "ts"]
    assert msg["ok"] is True
    assert msg["userId"] == 2
    assert isinstance(msg["userId"], int)


def test_identify_as_another_user_is_refused_and_closed_with_4403(settings: Settings, gateway: ServiceProcess) -> None:
    async def scenario() -> tuple[dict[str, object], tuple[int | None, str]]:
        async with await opened(gateway, token_for(settings, user_id=2)) as ws:
            await ws.send(orjson.dumps({"type": "identify", "userId": 3}).decode())
            msg = await recv_type(ws, "identified")
            return msg, await close_code(ws)

    msg, (code, reason) = asyncio.run(scenario())
    assert list(msg) == ["type", "ok", "error", "ts"]
    assert msg["ok"] is False
    assert msg["error"] == "Forbidden"
    assert (code, reason) == (4403, "Forbidden")


def test_non_json_frames_and_unusable_identifies_are_ignored_and_the_socket_stays_open(
    settings: Settings, gateway: ServiceProcess
) -> None:
    async def scenario() -> dict[str, object]:
        async with await opened(gateway, token_for(settings, user_id=2)) as ws:
            for junk in (
                "hello",
                "[1,2]",
                "null",
                '{"type":"identify","userId":0}',
                '{"type":"identify"}',
                '{"type":"identify","userId":"abc"}',
                '{"type":"nope"}',
                b"\x00\x01",
            ):
                await ws.send(junk)
            await ws.send('{"type":"ping"}')
            return await recv_json(ws)  # the very next frame: nothing was answered to the junk

    assert asyncio.run(scenario())["type"] == "pong"


@pytest.mark.parametrize(
    ("label", "headers"),
    [
        ("no header", {}),
        ("not bearer", {"Authorization": "Basic abc"}),
        ("garbage", {"Authorization": "Bearer not.a.token"}),
    ],
)
def test_a_missing_or_invalid_token_is_accepted_then_closed_with_4401(
    settings: Settings, gateway: ServiceProcess, label: str, headers: dict[str, str]
) -> None:
    async def scenario() -> tuple[int | None, str]:
        from websockets.asyncio.client import connect

        async with connect(gateway.ws_url + "/ws/desktop", additional_headers=headers, open_timeout=5) as ws:
            return await close_code(ws)

    assert asyncio.run(scenario()) == (4401, "Unauthorized"), label


def test_a_token_signed_with_another_secret_is_closed_with_4401(settings: Settings, gateway: ServiceProcess) -> None:
    from ccsm_core.tokens import TokenService

    forged = TokenService("x" * 48).issue(2, 2, "mreyes")

    async def scenario() -> tuple[int | None, str]:
        async with await open_socket(gateway, forged) as ws:
            return await close_code(ws)

    assert asyncio.run(scenario())[0] == 4401


def test_a_token_that_expires_during_the_session_closes_it_with_4401(
    settings: Settings, gateway: ServiceProcess
) -> None:
    # exp is 1 s from now; verification allows 5 s of clock skew, so the token stops being valid ~6 s from now.
    token = token_for(settings, ttl_s=2, now=time.time() - 1)

    async def scenario() -> tuple[float, tuple[int | None, str]]:
        async with await opened(gateway, token) as ws:
            start = time.monotonic()
            result = await close_code(ws, within=10)
            return time.monotonic() - start, result

    took, (code, reason) = asyncio.run(scenario())
    assert (code, reason) == (4401, "Token expired")
    assert 1 < took < 8


def test_a_revocation_on_redis_closes_that_users_sockets_with_4401_and_no_others(
    settings: Settings, gateway: ServiceProcess
) -> None:
    async def scenario() -> tuple[tuple[int | None, str], tuple[int | None, str], dict[str, object]]:
        async with (
            await opened(gateway, token_for(settings, user_id=5, role=3)) as a,
            await opened(gateway, token_for(settings, user_id=5, role=3)) as b,
            await opened(gateway, token_for(settings, user_id=2)) as other,
        ):
            # User 5, whom no later test connects as: the revocation stays logged in Redis for the whole run, and
            # a token issued in its second counts as older (ccsm_core.guard.predates_revocation).
            assert await publish(settings, REVOCATIONS, "5") >= 1
            first, second = await asyncio.gather(close_code(a), close_code(b))
            await other.send('{"type":"ping"}')
            return first, second, await recv_type(other, "pong")

    first, second, pong = asyncio.run(scenario())
    assert first == (4401, "Unauthorized")
    assert second == (4401, "Unauthorized")
    assert pong["type"] == "pong"


def test_an_origin_outside_the_allow_list_is_refused_at_the_upgrade(
    settings: Settings, gateway: ServiceProcess
) -> None:
    async def scenario() -> int:
        try:
            await open_socket(gateway, token_for(settings), origin="https://evil.example.net")
        except InvalidStatus as exc:
            return exc.response.status_code
        raise AssertionError("the upgrade was accepted")

    assert asyncio.run(scenario()) == 403


def test_an_allowed_origin_connects(settings: Settings, gateway: ServiceProcess) -> None:
    async def scenario() -> str:
        async with await opened(gateway, token_for(settings), origin=settings.cors_origins[0]) as ws:
            await ws.send('{"type":"ping"}')
            return str((await recv_type(ws, "pong"))["type"])

    assert asyncio.run(scenario()) == "pong"


def test_another_path_is_refused_at_the_upgrade(settings: Settings, gateway: ServiceProcess) -> None:
    async def scenario(path: str) -> int:
        try:
            await open_socket(gateway, token_for(settings), path=path)
        except InvalidStatus as exc:
            return exc.response.status_code
        raise AssertionError(f"{path} was accepted")

    assert asyncio.run(scenario("/ws/other")) == 403
    assert asyncio.run(scenario("/ws/desktop/")) == 403


def test_db_changed_reaches_every_open_socket_identified_or_not(settings: Settings, gateway: ServiceProcess) -> None:
    event = orjson.dumps({"type": "db-changed", "reason": "transaction-commit", "ts": 1767225600000})

    async def scenario() -> list[dict[str, object]]:
        async with (
            await opened(gateway, token_for(settings, user_id=2)) as identified,
            await opened(gateway, token_for(settings, user_id=3)) as anonymous,
        ):
            await identified.send('{"type":"identify","userId":2}')
            await recv_type(identified, "identified")
            assert await publish(settings, DB_CHANGED, event) >= 1
            return list(await asyncio.gather(recv_type(identified, "db-changed"), recv_type(anonymous, "db-changed")))

    got = asyncio.run(scenario())
    assert got == [orjson.loads(event)] * 2


def test_frames_over_64_kib_close_the_socket_with_1009(settings: Settings, gateway: ServiceProcess) -> None:
    async def scenario() -> tuple[int | None, str]:
        async with await opened(gateway, token_for(settings), max_size=None) as ws:
            await ws.send("x" * (64 * 1024 + 1))
            return await close_code(ws)

    assert asyncio.run(scenario())[0] == 1009


def test_a_frame_of_exactly_64_kib_is_accepted(settings: Settings, gateway: ServiceProcess) -> None:
    async def scenario() -> str:
        async with await opened(gateway, token_for(settings)) as ws:
            await ws.send('{"type":"ping","pad":"' + "x" * (64 * 1024 - 30) + '"}')
            return str((await recv_type(ws, "pong"))["type"])

    assert asyncio.run(scenario()) == "pong"


def test_compression_is_not_negotiated_even_when_the_client_offers_it(
    settings: Settings, gateway: ServiceProcess
) -> None:
    async def scenario() -> str | None:
        from websockets.asyncio.client import connect

        async with connect(
            gateway.ws_url + "/ws/desktop",
            additional_headers={"Authorization": f"Bearer {token_for(settings)}"},
            compression="deflate",
            open_timeout=5,
        ) as ws:
            assert ws.response is not None
            return ws.response.headers.get("Sec-WebSocket-Extensions")

    assert asyncio.run(scenario()) is None
